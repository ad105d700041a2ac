"""Shared test fixtures: quiet TensorFlow, deterministic seeds, small trained models (built once per session)."""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from keras import layers  # noqa: E402


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


@pytest.fixture(scope="session")
def digits_split(digits_data):
    """digits_data as optimize()'s {"train": (x, y), "eval": (x, y)}."""
    x_train, y_train, x_test, y_test = digits_data
    return {"train": (x_train, y_train), "eval": (x_test, y_test)}


@pytest.fixture(scope="session")
def bn_cnn(digits_data):
    """A digits CNN with Conv-BN-ReLU blocks, a residual Add and a softmax head."""
    x, y, _, _ = digits_data
    keras.utils.set_random_seed(2)
    inp = keras.Input((8, 8, 1), name="image")
    h = layers.Conv2D(16, 3, padding="same", use_bias=False, name="conv1")(inp)
    h = layers.BatchNormalization(name="bn1")(h)
    h = layers.ReLU(name="relu1")(h)
    r = layers.Conv2D(16, 3, padding="same", use_bias=False, name="conv2")(h)
    r = layers.BatchNormalization(name="bn2")(r)
    h = layers.ReLU(name="relu2")(layers.Add(name="add")([h, r]))
    h = layers.MaxPooling2D(name="pool")(h)
    h = layers.Flatten(name="flatten")(h)
    h = layers.Dense(32, activation="relu", name="fc1")(h)
    out = layers.Dense(10, activation="softmax", name="predictions")(h)
    model = keras.Model(inp, out, name="bn_cnn")
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
    model.fit(x, y, epochs=6, batch_size=64, verbose=0)
    return model


@pytest.fixture(scope="session")
def sensitive(digits_cnn, digits_data):
    """digits_cnn with conv1's busiest channel 300x larger (conv2 compensates): same float
    function, but the per-tensor int8 range of conv1's output is ruined."""
    from kerascompress.quant import fake_quant as fq

    x = digits_data[0][:256]
    out = keras.Model(digits_cnn.inputs, digits_cnn.get_layer("conv1").output).predict(x, verbose=0)
    channel = int(np.argmax(out.reshape(-1, out.shape[-1]).mean(0)))
    return fq.unbalance_channel(digits_cnn, "conv1", "conv2", channel=channel, factor=300.0)


@pytest.fixture(scope="session")
def heavy_tailed():
    """A small dense model and heavy-tailed inputs (Student t, 2 degrees of freedom)."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((16,), name="x")
    h = keras.layers.Dense(16, activation="relu", name="fc1")(inp)
    model = keras.Model(inp, keras.layers.Dense(4, name="out")(h))
    x = np.random.default_rng(0).standard_t(2, (512, 16)).astype(np.float32)
    return model, x


@pytest.fixture(scope="session")
def legacy_cnn(digits_data):
    """A tf_keras CNN trained on digits to ~95% (a few seconds); skips where tf_keras is not installed."""
    tf_keras = pytest.importorskip("tf_keras", reason="tf_keras not installed: pip install 'kerascompress[tfmot]'")

    x, y, _, _ = digits_data
    tf_keras.utils.set_random_seed(1)
    inp = tf_keras.Input((8, 8, 1), name="image")
    h = tf_keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv1")(inp)
    h = tf_keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv2")(h)
    h = tf_keras.layers.MaxPooling2D(name="pool")(h)
    h = tf_keras.layers.Flatten(name="flatten")(h)
    h = tf_keras.layers.Dense(64, activation="relu", name="fc1")(h)
    out = tf_keras.layers.Dense(10, activation="softmax", name="predictions")(h)
    model = tf_keras.Model(inp, out, name="legacy_cnn")
    model.compile(optimizer=tf_keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(x, y, epochs=8, batch_size=64, verbose=0)
    return model
