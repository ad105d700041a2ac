"""Shared test fixtures: quiet TensorFlow, deterministic seeds, small trained models (built once per session).

The host CPU is split into two logical devices here, at conftest import, before any
TensorFlow op runs (TensorFlow fixes its devices when its runtime first initialises):
MirroredStrategy then has two real replicas without GPUs. Single-device code is
unaffected: the default strategy still places everything on /cpu:0. If something
initialised TensorFlow earlier (a plugin), tests marked ``needs_cpus(n)`` re-run
themselves in a fresh ``python -m pytest <node id>``, where this file splits the CPU first.
"""
from __future__ import annotations

import os
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
from keras import layers  # noqa: E402

LOGICAL_CPUS = 2
_IN_CHILD = "KERASCOMPRESS_TEST_CHILD"


def _split_cpu(n: int) -> int:
    """Try to expose ``n`` logical CPUs; return how many this process has."""
    try:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * n)
    except RuntimeError:  # the runtime is already initialised: keep what it has
        pass
    return len(tf.config.list_logical_devices("CPU"))


AVAILABLE_CPUS = _split_cpu(LOGICAL_CPUS)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "needs_cpus(n): needs n logical CPU devices (re-runs in a subprocess if absent)")


_SESSION_EXIT: dict[str, int] = {}


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _SESSION_EXIT["status"] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """Leave with pytest's own exit status, skipping Python's interpreter teardown.

    TensorFlow's C++ runtime (here with a live two-replica MirroredStrategy and LiteRT
    interpreters) can crash while Python tears down module state after every test has
    passed (a known class of problem, e.g. tensorflow/tensorflow#40186): CI saw
    "854 passed" followed by a segmentation fault (exit 139). Every result is reported
    by then; set KERASCOMPRESS_TEST_FULL_TEARDOWN=1 to keep the normal teardown.
    """
    if "status" in _SESSION_EXIT and not os.environ.get("KERASCOMPRESS_TEST_FULL_TEARDOWN"):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_SESSION_EXIT["status"])


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    marker = pyfuncitem.get_closest_marker("needs_cpus")
    if marker is None or AVAILABLE_CPUS >= marker.args[0]:
        return None
    if os.environ.get(_IN_CHILD):
        pytest.fail(f"needs {marker.args[0]} logical CPUs but this fresh process has {AVAILABLE_CPUS}")
    env = dict(os.environ, **{_IN_CHILD: "1"})
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "",
                           pyfuncitem.nodeid], cwd=str(pyfuncitem.config.rootpath), env=env, capture_output=True,
                          text=True)
    if proc.returncode != 0:
        pytest.fail(f"subprocess run of {pyfuncitem.nodeid} failed:\n{proc.stdout[-4000:]}", pytrace=False)
    return True


@pytest.fixture(autouse=True)
def _seed() -> None:
    keras.utils.set_random_seed(0)


@pytest.fixture(scope="session")
def mirrored():
    """The process's two-replica MirroredStrategy over the logical CPUs (None where absent: the test re-runs).

    One instance per process: a second MirroredStrategy reuses collective keys the
    runtime has bound to other shapes ("Shape mismatch in the collective instance").
    """
    if AVAILABLE_CPUS < LOGICAL_CPUS:
        return None
    from kerascompress.training.strategies import mirrored as shared

    return shared([f"/cpu:{i}" for i in range(LOGICAL_CPUS)])


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
