"""What kind of model we were handed, without importing the libraries it may come from."""
from __future__ import annotations

import sys

import keras

from kerascompress.models.kinds import has_layer_graph, is_tf_keras_model


def test_keras3_models_are_not_taken_for_tf_keras(digits_cnn) -> None:
    assert not is_tf_keras_model(digits_cnn)


def test_a_class_from_tf_keras_is_recognised_by_its_module_without_importing_it(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "tf_keras", None)  # any import of tf_keras would now fail
    base = type("Model", (), {"__module__": "tf_keras.src.engine.training"})
    legacy = type("MyNet", (base,), {"__module__": "user_code"})()  # a user's subclass counts too
    assert is_tf_keras_model(legacy)
    assert not is_tf_keras_model(object())


def test_functional_and_sequential_are_graph_models_subclassed_are_not() -> None:
    inp = keras.Input((3,))
    assert has_layer_graph(keras.Model(inp, keras.layers.Dense(2)(inp)))
    assert has_layer_graph(keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]))

    class Net(keras.Model):
        def call(self, x):
            return x

    assert not has_layer_graph(Net())
