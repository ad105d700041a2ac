"""Loading models from objects and files; refusing what cannot be read; weight digests."""
import keras
import numpy as np
import pytest

from kerascompress.errors import UnsupportedModelError
from kerascompress.models.io import check_supported, load_model, weights_digest


def _model():
    inp = keras.Input((4,), name="x")
    return keras.Model(inp, keras.layers.Dense(3, name="d")(inp))


def test_load_from_keras_file(tmp_path):
    m = _model()
    path = tmp_path / "m.keras"
    m.save(path)
    loaded = load_model(path)
    x = np.random.rand(5, 4).astype(np.float32)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), m.predict(x, verbose=0))
    assert load_model(m) is m  # a model object is taken as is


def test_weights_digest_sees_every_weight_change():
    m = _model()
    digest = weights_digest(m)
    assert weights_digest(m) == digest and len(digest) == 64
    m.get_layer("d").bias.assign(np.array([0.0, 0.0, 1e-7], np.float32))
    assert weights_digest(m) != digest


def test_bad_inputs_get_clear_errors(tmp_path):
    with pytest.raises(UnsupportedModelError, match="does not exist"):
        load_model(tmp_path / "missing.keras")
    corrupt = tmp_path / "bad.keras"
    corrupt.write_bytes(b"not a zip")
    with pytest.raises(UnsupportedModelError, match="could not load"):
        load_model(corrupt)
    with pytest.raises(UnsupportedModelError, match="unknown model format"):
        (tmp_path / "m.pt").write_bytes(b"x")
        load_model(tmp_path / "m.pt")
    (tmp_path / "sm").mkdir()
    (tmp_path / "sm" / "saved_model.pb").write_bytes(b"")
    with pytest.raises(UnsupportedModelError, match="SavedModel"):
        load_model(tmp_path / "sm")
    with pytest.raises(UnsupportedModelError, match="expected a keras.Model"):
        load_model(42)


def test_subclassed_model_is_accepted_once_built():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.d = keras.layers.Dense(2)

        def call(self, x):
            return self.d(x)

    net = Net()
    with pytest.raises(UnsupportedModelError, match="not built"):
        check_supported(net)
    net(np.zeros((1, 3), np.float32))
    check_supported(net)  # the driver wraps it; passes that need a layer graph are skipped
    check_supported(_model())
