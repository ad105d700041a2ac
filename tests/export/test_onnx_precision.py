"""Precision in the ONNX graph: FP16 typing, TensorRT-style Q/DQ, mixed per-layer plans.

Each variant is also checked numerically with onnxruntime against Keras.
"""
from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")
onnx = pytest.importorskip("onnx")

from onnx import numpy_helper  # noqa: E402

from kerascompress.errors import ExportError  # noqa: E402
from kerascompress.export.onnx import to_onnx  # noqa: E402
from kerascompress.export.onnx_precision import describe_precision  # noqa: E402
from kerascompress.quant.plan import PrecisionPlan  # noqa: E402
from kerascompress.runtime.onnx_runner import OnnxModel  # noqa: E402
from tests.helpers.models import mobilenet_v2, small_cnn  # noqa: E402


@pytest.fixture(scope="module")
def cnn():
    return small_cnn()


@pytest.fixture(scope="module")
def calib():
    return np.random.default_rng(1).uniform(-1, 1, (64, 16, 16, 3)).astype("float32")


def _consts(proto):
    return {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}


def check_qdq_layout(proto, model, art):
    """TensorRT's explicit-quantization layout, node by node."""
    consts = _consts(proto)
    producers = {o: n for n in proto.graph.node for o in n.output}
    qs = [n for n in proto.graph.node if n.op_type == "QuantizeLinear"]
    assert qs, "no QuantizeLinear nodes"
    for q in qs:  # symmetric: zero point 0, int8
        zp = consts[q.input[2]]
        assert zp.dtype == np.int8 and not zp.any()
        assert consts[q.input[1]].size == 1  # activations: per tensor
    seen_weights = 0
    for dq in (n for n in proto.graph.node if n.op_type == "DequantizeLinear"):
        zp = consts[dq.input[2]]
        assert zp.dtype == np.int8 and not zp.any()
        if dq.input[0] in consts:  # a weight: per output channel
            seen_weights += 1
            axis = next(a.i for a in dq.attribute if a.name == "axis")
            w = consts[dq.input[0]]
            consumer = next(n for n in proto.graph.node if dq.output[0] in n.input)
            layer = model.get_layer(art.node_layers[consumer.name])
            out_channels = layer.get_weights()[0].shape[-1] if not isinstance(
                layer, keras.layers.DepthwiseConv2D
            ) else layer.get_weights()[0].shape[2] * layer.get_weights()[0].shape[3]
            assert consts[dq.input[1]].shape == (w.shape[axis],)
            assert w.shape[axis] == out_channels
        else:
            assert producers[dq.input[0]].op_type == "QuantizeLinear"
            assert consts[dq.input[1]].size == 1
    assert seen_weights == len(describe_precision(proto).quantized_nodes)


def test_fp16_keeps_float32_io(cnn):
    art = to_onnx(cnn, plan=PrecisionPlan("fp16"))
    proto = art.load()
    s = describe_precision(proto)
    assert s.fp16_initializers >= 5 and s.fp32_initializers == 0
    assert s.input_types == ("fp32",) and s.output_types == ("fp32",)
    assert {n.op_type for n in proto.graph.node if n.name in s.fp16_nodes} >= {"Conv", "MatMul", "Relu"}
    assert art.relative_error < 5e-3 and art.max_abs_error > 0  # really computed in fp16


def test_fp16_io_when_asked(cnn):
    art = to_onnx(cnn, plan=PrecisionPlan("fp16"), keep_io_float32=False)
    s = describe_precision(art.load())
    assert s.input_types == ("fp16",) and s.output_types == ("fp16",)
    assert not [n for n in art.load().graph.node if n.op_type == "Cast"]  # nothing left to cast
    assert art.relative_error < 5e-3


def test_int8_qdq_layout_and_fidelity(cnn, calib):
    art = to_onnx(cnn, plan=PrecisionPlan("int8"), calibration_data=calib)
    proto = art.load()
    check_qdq_layout(proto, cnn, art)
    assert sorted(art.node_layers[n] for n in art.quantized_nodes) == ["conv1", "dense", "dense_1", "dw", "fc"]
    assert art.relative_error < 0.05
    assert "int8 calibrated on 64 samples" in " ".join(art.notes)


def test_int8_float_layers_excluded(cnn, calib):
    art = to_onnx(cnn, plan=PrecisionPlan("int8", float_layers=("fc", "conv1")), calibration_data=calib)
    assert sorted(art.node_layers[n] for n in art.quantized_nodes) == ["dense", "dense_1", "dw"]


def test_mixed_plan_puts_qdq_only_on_int8_layers(cnn, calib):
    plan = PrecisionPlan("mixed", layer_precisions=(("conv1", "int8"), ("fc", "int8"), ("dw", "fp16"), ("relu1", "fp16")))
    art = to_onnx(cnn, plan=plan, calibration_data=calib)
    proto = art.load()
    check_qdq_layout(proto, cnn, art)
    assert sorted(art.node_layers[n] for n in art.quantized_nodes) == ["conv1", "fc"]
    # No consumer outside the int8 layers reads a dequantized tensor.
    dq_out = {n.output[0] for n in proto.graph.node if n.op_type == "DequantizeLinear"}
    readers = {art.node_layers.get(n.name, "") for n in proto.graph.node if set(n.input) & dq_out}
    assert readers == {"conv1", "fc"}
    assert sorted({art.node_layers[n] for n in art.fp16_nodes}) == ["dw", "relu1"]
    s = describe_precision(proto)
    assert s.precisions == ("fp32", "fp16", "int8") and s.input_types == ("fp32",)
    assert art.relative_error < 0.05


def _layer_input_ranges(model, layers, data):
    probe = keras.Model(model.inputs, [model.get_layer(n).input for n in layers])
    outs = probe(data)
    outs = outs if isinstance(outs, (list, tuple)) else [outs]
    return {n: (float(np.min(o)), float(np.max(o))) for n, o in zip(layers, outs)}


def test_int8_from_given_ranges(cnn, calib):
    layers = ["conv1", "dw", "dense", "dense_1", "fc"]
    ranges = _layer_input_ranges(cnn, layers, calib)
    art = to_onnx(cnn, plan=PrecisionPlan("int8"), activation_ranges=ranges, sample_data=calib[:16])
    proto = art.load()
    check_qdq_layout(proto, cnn, art)
    consts = _consts(proto)
    by_layer = {}
    for node in proto.graph.node:
        if node.op_type in ("Conv", "MatMul") and node.name in art.quantized_nodes:
            dq = next(n for n in proto.graph.node if n.output[0] == node.input[0])
            by_layer[art.node_layers[node.name]] = float(consts[dq.input[1]])
    for name, (lo, hi) in ranges.items():
        assert by_layer[name] == pytest.approx(max(abs(lo), abs(hi)) / 127.0, rel=1e-6)
    assert art.relative_error < 0.05


def test_missing_range_is_an_error(cnn):
    with pytest.raises(ExportError, match="no activation range"):
        to_onnx(cnn, plan=PrecisionPlan("int8"), activation_ranges={"conv1": (-1.0, 1.0)})


@pytest.fixture(scope="module")
def mobilenet():
    return mobilenet_v2()


@pytest.fixture(scope="module")
def mobilenet_data():
    return np.random.default_rng(2).uniform(-1, 1, (32, 96, 96, 3)).astype("float32")


def test_mobilenetv2_fp16(mobilenet, mobilenet_data):
    art = to_onnx(mobilenet, plan=PrecisionPlan("fp16"), sample_data=mobilenet_data[:8])
    s = describe_precision(art.load())
    assert s.fp32_initializers == 0 and s.input_types == ("fp32",)
    assert art.relative_error < 0.1


def _corr(art, model, x):
    got = OnnxModel(art.model_bytes).predict(x)
    return float(np.corrcoef(got.ravel(), model(x).numpy().ravel())[0, 1])


def test_mobilenetv2_int8(mobilenet, mobilenet_data):
    art = to_onnx(mobilenet, plan=PrecisionPlan("int8"), calibration_data=mobilenet_data)
    proto = art.load()
    check_qdq_layout(proto, mobilenet, art)
    weighted = [layer.name for layer in mobilenet.layers if layer.get_weights() and not isinstance(layer, keras.layers.BatchNormalization)]
    assert sorted({art.node_layers[n] for n in art.quantized_nodes}) == sorted(weighted)
    # A random-weight 50-layer net is far more sensitive than a trained one; the check is
    # that int8 still tracks the float outputs closely.
    assert _corr(art, mobilenet, mobilenet_data) > 0.8


def test_mobilenetv2_mixed(mobilenet, mobilenet_data):
    convs = [layer.name for layer in mobilenet.layers if layer.get_weights() and not isinstance(layer, keras.layers.BatchNormalization)]
    plan = PrecisionPlan("mixed", layer_precisions=tuple((n, "fp16" if i % 3 else "int8") for i, n in enumerate(convs)))
    int8 = {n for n, p in plan.layer_precisions if p == "int8"}
    fp16 = {n for n, p in plan.layer_precisions if p == "fp16"}
    art = to_onnx(mobilenet, plan=plan, calibration_data=mobilenet_data)
    assert {art.node_layers[n] for n in art.quantized_nodes} == int8
    assert {art.node_layers[n] for n in art.fp16_nodes} == fp16
    assert _corr(art, mobilenet, mobilenet_data) > 0.8


@pytest.mark.slow
def test_resnet50_precisions():
    keras.utils.set_random_seed(0)
    model = keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3), classifier_activation=None)
    for bn in (layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)):
        bn.momentum = 0.0
    x = np.random.default_rng(0).uniform(-1, 1, (16, 64, 64, 3)).astype("float32")
    model(x, training=True)
    fp16 = to_onnx(model, plan=PrecisionPlan("fp16"), sample_data=x[:4])
    assert fp16.relative_error < 0.1
    int8 = to_onnx(model, plan=PrecisionPlan("int8"), calibration_data=x)
    check_qdq_layout(int8.load(), model, int8)
    assert _corr(int8, model, x) > 0.8
