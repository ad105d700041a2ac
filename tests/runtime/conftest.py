"""Fixtures of the runtime tests."""
from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import layers


def _two_io_model() -> keras.Model:
    # Input and output names sort opposite to their order, to catch name-sorted mappings.
    a = keras.Input((5,), name="zeta")
    b = keras.Input((3,), name="alpha")
    h = layers.Concatenate(name="cat")([layers.Dense(8, name="da")(a), layers.Dense(8, name="db")(b)])
    o1 = layers.Dense(2, name="z_head")(h)
    o2 = layers.Dense(4, name="a_head")(h)
    return keras.Model([a, b], [o1, o2], name="two_io")


@pytest.fixture(scope="module")
def two_io():
    """A two-input, two-output model (names sorted against their order) and 40 samples for it."""
    keras.utils.set_random_seed(3)
    model = _two_io_model()
    rng = np.random.default_rng(0)
    x = [rng.standard_normal((40, 5)).astype("f4"), rng.standard_normal((40, 3)).astype("f4")]
    return model, x
