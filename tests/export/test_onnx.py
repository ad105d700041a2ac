"""to_onnx: float32 fidelity, names and order, opset limits, layer mapping, atomic write."""
from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from kerascompress.errors import ConfigError, DataError, ExportError  # noqa: E402
from kerascompress.export.onnx import onnx_node_layers, to_onnx  # noqa: E402
from kerascompress.quant.plan import PrecisionPlan  # noqa: E402
from kerascompress.runtime.onnx_runner import OnnxModel  # noqa: E402
from tests.helpers.models import mobilenet_v2, small_cnn, two_in_two_out  # noqa: E402


@pytest.fixture(scope="module")
def cnn():
    return small_cnn()


def test_float32_fidelity_and_names(cnn, tmp_path):
    path = tmp_path / "sub" / "cnn.onnx"
    art = to_onnx(cnn, path)
    assert art.max_abs_error < 1e-4
    assert art.input_names == ["image"] and art.output_names == ["fc"]
    assert path.read_bytes() == art.model_bytes
    assert [p.name for p in path.parent.iterdir()] == ["cnn.onnx"]  # no temp file left behind
    x = np.random.default_rng(3).normal(size=(5, 16, 16, 3)).astype("float32")
    np.testing.assert_allclose(OnnxModel(path).predict(x), cnn(x).numpy(), atol=1e-4)


def test_multi_input_multi_output_keep_order():
    model = two_in_two_out()
    art = to_onnx(model, sample_data=[np.ones((3, 8), "float32"), np.zeros((3, 5), "float32")])
    assert art.input_names == ["a_in", "b_in"]
    assert art.output_names == ["head_z", "head_a"]
    assert len(art.per_output_max_abs_error) == 2 and art.max_abs_error < 1e-5
    rng = np.random.default_rng(0)
    xa, xb = rng.normal(size=(4, 8)).astype("float32"), rng.normal(size=(4, 5)).astype("float32")
    got = OnnxModel(art.model_bytes).predict([xa, xb])
    want = model([xa, xb])
    assert got[0].shape == (4, 3) and got[1].shape == (4, 2)
    np.testing.assert_allclose(got[0], want[0].numpy(), atol=1e-5)
    np.testing.assert_allclose(got[1], want[1].numpy(), atol=1e-5)
    by_name = OnnxModel(art.model_bytes).predict({"b_in": xb, "a_in": xa})
    np.testing.assert_allclose(by_name[1], want[1].numpy(), atol=1e-5)


@pytest.mark.parametrize("opset", [19, 20, 12])
def test_unsupported_opsets_refused(cnn, opset):
    with pytest.raises(ExportError, match="opset"):
        to_onnx(cnn, opset=opset)


def test_lowest_opset_works(cnn):
    art = to_onnx(cnn, opset=13)
    assert art.opset == 13 and art.max_abs_error < 1e-4


def test_node_to_layer_mapping(cnn):
    art = to_onnx(cnn)
    proto = art.load()
    mapping = onnx_node_layers(proto, cnn)
    compute = {n.name: mapping[n.name] for n in proto.graph.node if n.op_type in ("Conv", "MatMul", "Gemm")}
    # Every weighted layer owns exactly one compute node; BN folded into conv1 maps to conv1.
    assert sorted(compute.values()) == sorted(["conv1", "dw", "dense", "dense_1", "fc"])
    relu = [n for n, layer in mapping.items() if layer == "relu1"]
    assert relu and all("relu1" in n for n in relu)


def test_bad_plans_refused(cnn):
    with pytest.raises(ConfigError, match="dynamic"):
        to_onnx(cnn, plan=PrecisionPlan("dynamic"))
    with pytest.raises(ConfigError, match="does not have"):
        to_onnx(cnn, plan=PrecisionPlan("mixed", layer_precisions=(("nope", "int8"),)))
    with pytest.raises(ConfigError, match="int8_io"):
        to_onnx(cnn, plan=PrecisionPlan("int8", int8_io=True))
    with pytest.raises(DataError, match="calibration_data"):
        to_onnx(cnn, plan=PrecisionPlan("int8"))


def test_mobilenetv2_float32_fidelity(mobilenet):
    art = to_onnx(mobilenet)
    assert art.max_abs_error < 1e-4
    assert all(art.node_layers[n] for n in art.node_layers if "Conv" in n or "MatMul" in n)


@pytest.fixture(scope="module")
def mobilenet():
    return mobilenet_v2()


@pytest.mark.slow
def test_resnet50_float32_fidelity():
    keras.utils.set_random_seed(0)
    model = keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3), classifier_activation=None)
    art = to_onnx(model)
    assert art.relative_error < 1e-4
