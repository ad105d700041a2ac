"""OnnxModel: Keras-order float I/O and a latency record (no timing thresholds)."""
from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from kerascompress.errors import DataError  # noqa: E402
from kerascompress.export.onnx import to_onnx  # noqa: E402
from kerascompress.quant.plan import PrecisionPlan  # noqa: E402
from kerascompress.runtime.onnx_runner import OnnxModel  # noqa: E402
from kerascompress.runtime.stats import LatencyStats  # noqa: E402
from tests.helpers.models import small_cnn, two_in_two_out  # noqa: E402


@pytest.fixture(scope="module")
def cnn_onnx(tmp_path_factory):
    model = small_cnn()
    path = tmp_path_factory.mktemp("onnx") / "cnn.onnx"
    to_onnx(model, path)
    return model, path


def test_predict_matches_keras_from_path_and_bytes(cnn_onnx):
    model, path = cnn_onnx
    x = np.random.default_rng(0).normal(size=(3, 16, 16, 3)).astype("float32")
    for src in (path, str(path), path.read_bytes()):
        y = OnnxModel(src).predict(x)
        assert y.dtype == np.float32 and y.shape == (3, 4)
        np.testing.assert_allclose(y, model(x).numpy(), atol=1e-4)


def test_float16_io_is_cast_at_the_boundary():
    model = small_cnn()
    art = to_onnx(model, plan=PrecisionPlan("fp16"), keep_io_float32=False)
    x = np.random.default_rng(1).uniform(-1, 1, (2, 16, 16, 3)).astype("float32")
    y = OnnxModel(art.model_bytes).predict(x)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, model(x).numpy(), atol=2e-2)


def test_multi_io_order_and_dict_feed():
    model = two_in_two_out()
    runner = OnnxModel(to_onnx(model).model_bytes, num_threads=2)
    assert runner.input_names == ["a_in", "b_in"] and runner.output_names == ["head_z", "head_a"]
    xa, xb = np.ones((2, 8), "float32"), np.full((2, 5), 0.5, "float32")
    listed = runner.predict([xa, xb])
    named = runner.predict({"a_in": xa, "b_in": xb})
    for got, want in zip(listed, model([xa, xb])):
        np.testing.assert_allclose(got, want.numpy(), atol=1e-5)
    for a, b in zip(listed, named):
        np.testing.assert_array_equal(a, b)


def test_bad_inputs_say_what_is_wrong(cnn_onnx, tmp_path):
    _, path = cnn_onnx
    runner = OnnxModel(path)
    with pytest.raises(DataError, match="rank 4"):
        runner.predict(np.zeros((16, 16, 3), "float32"))
    with pytest.raises(DataError, match="takes 1 inputs"):
        runner.predict([np.zeros((1, 16, 16, 3), "float32")] * 2)
    with pytest.raises(DataError, match="does not exist"):
        OnnxModel(tmp_path / "missing.onnx")


def test_latency_record(cnn_onnx):
    _, path = cnn_onnx
    stats = OnnxModel(path, num_threads=1).latency(runs=5, warmup=1)
    assert isinstance(stats, LatencyStats)
    assert stats.runs == 5 and stats.threads == 1
    assert 0 < stats.median_ms <= stats.p90_ms and stats.mean_ms > 0
