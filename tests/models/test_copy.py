"""Copying models: new variables, the same function, the original never touched."""
from __future__ import annotations

import keras
import numpy as np

from kerascompress.models import copy as copy_module
from kerascompress.models.copy import copy_model
from kerascompress.models.io import weights_digest


def _model():
    inp = keras.Input((4,), name="x")
    return keras.Model(inp, keras.layers.Dense(3, name="d")(inp))


def test_copy_is_independent():
    m = _model()
    clone = copy_model(m)
    digest = weights_digest(m)
    assert weights_digest(clone) == digest
    clone.layers[-1].kernel.assign(np.zeros((4, 3)))
    assert weights_digest(m) == digest
    assert weights_digest(clone) != digest


def test_a_model_clone_model_cannot_rebuild_is_copied_through_the_graph(monkeypatch):
    m = _model()

    def refuse(*args, **kwargs):
        raise ValueError("clone_model cannot rebuild this graph")

    monkeypatch.setattr(copy_module.keras.models, "clone_model", refuse)
    clone = copy_model(m)
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    np.testing.assert_array_equal(clone.predict(x, verbose=0), m.predict(x, verbose=0))
    assert clone.get_layer("d").kernel is not m.get_layer("d").kernel


def test_copy_of_a_tf_keras_model_is_a_tf_keras_model(legacy_cnn):
    clone = copy_model(legacy_cnn)
    assert type(clone).__module__.startswith("tf_keras") and clone is not legacy_cnn
    assert weights_digest(clone) == weights_digest(legacy_cnn)
