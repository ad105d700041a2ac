"""What kind of model we were handed, without importing the libraries it may come from."""
from __future__ import annotations


def test_keras3_models_are_not_taken_for_tf_keras(digits_cnn) -> None:
    from kerascompress.models.kinds import is_tf_keras_model

    assert not is_tf_keras_model(digits_cnn)
