"""Shared test fixtures: quiet TensorFlow, deterministic seeds, small trained models."""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _seed() -> None:
    keras.utils.set_random_seed(0)


@pytest.fixture(scope="session")
def digits_data():
    """sklearn digits as (x_train, y_train, x_test, y_test): 8x8x1 float32 images in [0, 1]."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[..., None]
    y = d.target.astype(np.int64)
    return x[:1400], y[:1400], x[1400:], y[1400:]


@pytest.fixture(scope="session")
def digits_cnn(digits_data):
    """A small CNN trained on digits to ~95% test accuracy (a few seconds on 2 cores)."""
    from keras import layers

    x, y, _, _ = digits_data
    keras.utils.set_random_seed(1)
    inp = keras.Input((8, 8, 1), name="image")
    h = layers.Conv2D(16, 3, padding="same", activation="relu", name="conv1")(inp)
    h = layers.Conv2D(32, 3, padding="same", activation="relu", name="conv2")(h)
    h = layers.MaxPooling2D(name="pool")(h)
    h = layers.Flatten(name="flatten")(h)
    h = layers.Dense(64, activation="relu", name="fc1")(h)
    out = layers.Dense(10, activation="softmax", name="predictions")(h)
    model = keras.Model(inp, out, name="digits_cnn")
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=8, batch_size=64, verbose=0)
    return model
