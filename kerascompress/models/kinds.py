"""What kind of model object we were handed, without importing the optional libraries it may come from."""
from __future__ import annotations

from typing import Any

import keras


def is_tf_keras_model(model: Any) -> bool:
    """True for a legacy Keras 2 (tf_keras) model, without importing tf_keras."""
    return any(c.__module__.split(".")[0] == "tf_keras" for c in type(model).__mro__)


def has_layer_graph(model: Any) -> bool:
    """A Sequential model, or a Functional one whose class does not replace call() with its own code."""
    from keras.src.models.functional import Functional

    if isinstance(model, keras.Sequential):
        return True
    return isinstance(model, Functional) and type(model).call is Functional.call
