"""TFLite export: every precision mode, its size and accuracy, and the per-layer float fallback."""
from __future__ import annotations

import warnings

import keras
import numpy as np
import pytest
from keras import layers

from kerascompress.errors import ConfigError, DataError, ExportError
from kerascompress.export.tflite import _trace, layer_nodes, to_tflite
from kerascompress.quant import fake_quant as fq
from kerascompress.quant.plan import PrecisionPlan
from kerascompress.runtime.litert import LiteRTModel


def _ops(model_bytes: bytes) -> list[tuple[str, list[str], list[str]]]:
    """(op type, output tensor names, output dtypes) for each op of a flatbuffer."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=model_bytes)
    td = {t["index"]: t for t in it.get_tensor_details()}
    return [
        (op["op_name"], [td[i]["name"] for i in op["outputs"]], [np.dtype(td[i]["dtype"]).name for i in op["outputs"]])
        for op in it._get_ops_details()
    ]


@pytest.fixture(scope="module")
def exported(digits_cnn, digits_data):
    """The digits CNN in the five modes (conversion is ~0.1 s each)."""
    x_train = digits_data[0]
    out = {m: to_tflite(digits_cnn, m, representative_data=x_train) for m in ("float32", "fp16", "dynamic", "int8")}
    return out


def test_float32_matches_keras(digits_cnn, digits_data, exported):
    x = digits_data[2]
    ref = digits_cnn.predict(x, verbose=0)
    got = LiteRTModel(exported["float32"]).predict(x)
    assert got.shape == ref.shape == (len(x), 10)
    assert np.max(np.abs(got - ref)) < 1e-5


def test_fp16_is_half_size_and_close(digits_cnn, digits_data, exported):
    x = digits_data[2]
    ratio = len(exported["fp16"]) / len(exported["float32"])
    assert 0.45 < ratio < 0.6
    ref = digits_cnn.predict(x, verbose=0)
    got = LiteRTModel(exported["fp16"]).predict(x)
    assert np.max(np.abs(got - ref)) < 5e-3
    assert np.mean(got.argmax(1) == ref.argmax(1)) > 0.99


@pytest.mark.parametrize("mode", ["dynamic", "int8"])
def test_int8_weights_are_quarter_size(exported, mode):
    ratio = len(exported[mode]) / len(exported["float32"])
    assert 0.2 < ratio < 0.35, ratio


def test_int8_accuracy_close_to_keras(digits_cnn, digits_data, exported):
    x, y = digits_data[2], digits_data[3]
    keras_acc = np.mean(digits_cnn.predict(x, verbose=0).argmax(1) == y)
    assert keras_acc > 0.9
    for mode in ("dynamic", "int8"):
        acc = np.mean(LiteRTModel(exported[mode]).predict(x).argmax(1) == y)
        assert acc >= keras_acc - 0.02, (mode, acc, keras_acc)


def test_int8_model_computes_in_int8(exported):
    ops = _ops(exported["int8"])
    compute = [(t, d) for t, _, d in ops if t in ("CONV_2D", "FULLY_CONNECTED")]
    assert len(compute) == 4
    assert all(d == ["int8"] for _, d in compute)


def test_int8_io_gives_int8_tensors(digits_cnn, digits_data):
    x, y = digits_data[0], digits_data[3]
    data = to_tflite(digits_cnn, PrecisionPlan("int8", int8_io=True), representative_data=x)
    runner = LiteRTModel(data)
    assert runner.input_details[0]["dtype"] == np.int8
    assert runner.output_details[0]["dtype"] == np.int8
    # the runner quantizes and dequantizes, so accuracy is still measurable in float
    probs = runner.predict(digits_data[2])
    assert probs.dtype == np.float32
    assert np.mean(probs.argmax(1) == y) > 0.88
    # the argument overrides the plan
    data2 = to_tflite(digits_cnn, "int8", representative_data=x, int8_io=True)
    assert LiteRTModel(data2).input_details[0]["dtype"] == np.int8


def test_int16x8_keeps_float_io_and_int16_activations(digits_cnn, digits_data):
    data = to_tflite(digits_cnn, "int16x8", representative_data=digits_data[0][:50])
    ops = _ops(data)
    assert any(d == ["int16"] for t, _, d in ops if t == "CONV_2D")
    runner = LiteRTModel(data)
    assert runner.input_details[0]["dtype"] == np.float32
    ref = digits_cnn.predict(digits_data[2][:50], verbose=0)
    assert np.mean(runner.predict(digits_data[2][:50]).argmax(1) == ref.argmax(1)) > 0.95


def test_float_fallback_keeps_named_layer_in_float(digits_cnn, digits_data):
    plan = PrecisionPlan("int8", float_layers=("fc1",))
    data = to_tflite(digits_cnn, plan, representative_data=digits_data[0])
    compute = [(names, d) for t, names, d in _ops(data) if t in ("CONV_2D", "FULLY_CONNECTED")]
    fc1 = [d for names, d in compute if any("fc1" in n for n in names)]
    others = [d for names, d in compute if not any("fc1" in n for n in names)]
    assert fc1 == [["float32"]]
    assert len(others) == 3 and all(d == ["int8"] for d in others)
    acc = np.mean(LiteRTModel(data).predict(digits_data[2]).argmax(1) == digits_data[3])
    assert acc > 0.88


def test_float_fallback_of_output_layer_with_int8_io(digits_cnn, digits_data):
    plan = PrecisionPlan("int8", float_layers=("conv2",), int8_io=True)
    data = to_tflite(digits_cnn, plan, representative_data=digits_data[0])
    convs = [d for t, names, d in _ops(data) if t == "CONV_2D"]
    assert convs == [["int8"], ["float32"]]
    assert LiteRTModel(data).input_details[0]["dtype"] == np.int8


def test_unknown_float_layer_is_a_config_error(digits_cnn, digits_data):
    with pytest.raises(ConfigError, match="no_such_layer"):
        to_tflite(digits_cnn, PrecisionPlan("int8", float_layers=("no_such_layer",)),
                  representative_data=digits_data[0])


def _tricky_model() -> keras.Model:
    """Two inputs, two outputs, a shared layer and names that collide with TF's uniquified scopes."""
    a = keras.Input((6,), name="zeta")
    b = keras.Input((3,), name="alpha")
    shared = layers.Dense(6, name="dense")
    h1 = shared(a)
    h2 = layers.Dense(6, name="dense_1")(b)  # TF would call the second `dense` call "dense_1"
    h = layers.Concatenate(name="cat")([h1, h2])
    h = shared(layers.Dense(6, name="back", activation="relu")(h))
    o1 = layers.Dense(2, name="z_out")(h)
    o2 = layers.Dense(3, name="a_out", activation="softmax")(h)
    return keras.Model([a, b], [o1, o2], name="tricky")


def test_layer_to_node_mapping_is_exact():
    model = _tricky_model()
    trace = _trace(model)
    data = to_tflite(model, "float32")
    nodes = layer_nodes(data, trace)
    assert len(nodes["dense"]) == 2  # both calls of the shared layer
    assert len(nodes["dense_1"]) == 1 and not set(nodes["dense_1"]) & set(nodes["dense"])
    assert len(nodes["z_out"]) == 1 and len(nodes["a_out"]) >= 1
    assert set(nodes) >= {"dense", "dense_1", "back", "cat", "z_out", "a_out"}
    # every node belongs to exactly the layers that compute it: only fused neighbours share
    for layer in ("dense", "dense_1", "z_out"):
        for other, names in nodes.items():
            if other != layer:
                assert not set(nodes[layer]) & set(names), (layer, other)


def test_float_fallback_on_shared_layer_and_output(tmp_path):
    model = _tricky_model()
    rng = np.random.default_rng(0)
    rep = [rng.standard_normal((64, 6)).astype("f4"), rng.standard_normal((64, 3)).astype("f4")]
    data = to_tflite(model, PrecisionPlan("int8", float_layers=("dense", "z_out")), representative_data=rep)
    fcs = [(names[0], d[0]) for t, names, d in _ops(data) if t == "FULLY_CONNECTED"]
    floats = sorted(n for n, d in fcs if d == "float32")
    ints = [n for n, d in fcs if d == "int8"]
    assert len(floats) == 3, fcs  # dense twice + z_out
    assert len(ints) == 3, fcs  # dense_1, back, a_out
    ref = model.predict(rep, verbose=0)
    got = LiteRTModel(data).predict(rep)
    assert np.max(np.abs(got[0] - ref[0])) < 0.1 * np.max(np.abs(ref[0]))


def test_missing_representative_data_is_a_data_error(digits_cnn):
    with pytest.raises(DataError, match="representative_data"):
        to_tflite(digits_cnn, "int8")


def test_unsupported_plans_are_config_errors(digits_cnn, digits_data):
    with pytest.raises(ConfigError, match="mixed"):
        to_tflite(digits_cnn, PrecisionPlan("mixed", layer_precisions=(("fc1", "fp16"),)))
    with pytest.raises(ConfigError, match="entropy"):
        to_tflite(digits_cnn, PrecisionPlan("int8", calibration="entropy"), representative_data=digits_data[0])
    with pytest.raises(ConfigError, match="unknown TFLite precision"):
        to_tflite(digits_cnn, "int4")
    with pytest.raises(ConfigError, match="int8_io"):
        to_tflite(digits_cnn, "fp16", int8_io=True)


def test_int8_io_names_ops_without_int8_kernels():
    inp = keras.Input((4,), name="x")
    h = layers.Dense(4, name="d")(inp)
    h = keras.ops.sin(h)
    out = layers.Dense(2, name="head")(h)
    model = keras.Model(inp, out)
    rep = np.random.default_rng(0).standard_normal((32, 4)).astype("f4")
    with pytest.raises(ExportError, match="SIN"):
        to_tflite(model, "int8", representative_data=rep, int8_io=True)
    # with float I/O the same op simply falls back to float
    assert len(to_tflite(model, "int8", representative_data=rep)) > 0


def test_converter_errors_are_wrapped_with_its_message():
    inp = keras.Input((4,), name="x")
    out = keras.ops.arctan(layers.Dense(4, name="d")(inp))
    model = keras.Model(inp, out)
    with pytest.raises(ExportError, match="Atan"):
        to_tflite(model, "float32")


def test_path_is_written_atomically(digits_cnn, tmp_path):
    target = tmp_path / "sub" / "model.tflite"
    data = to_tflite(digits_cnn, "float32", path=target)
    assert target.read_bytes() == data
    assert sorted(p.name for p in target.parent.iterdir()) == ["model.tflite"]


def test_model_path_is_accepted(digits_cnn, digits_data, tmp_path):
    src = tmp_path / "m.keras"
    digits_cnn.save(src)
    data = to_tflite(str(src), "float32")
    x = digits_data[2][:20]
    assert np.max(np.abs(LiteRTModel(data).predict(x) - digits_cnn.predict(x, verbose=0))) < 1e-5


def test_folded_layer_warns_instead_of_pretending(digits_data):
    inp = keras.Input((8, 8, 1), name="img")
    h = layers.Conv2D(4, 3, name="c")(inp)
    h = layers.BatchNormalization(name="bn")(h)
    out = layers.Dense(3, name="head")(layers.Flatten(name="f")(h))
    model = keras.Model(inp, out)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        to_tflite(model, PrecisionPlan("int8", float_layers=("bn",)), representative_data=digits_data[0][:32])
    assert any("'bn' has no op of its own" in str(w.message) for w in caught)


def _input_scale(data):
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=data)
    quant = [t for t in interp.get_tensor_details() if t["name"] == "tfl.quantize"]
    return float(quant[0]["quantization_parameters"]["scales"][0])


def test_tflite_export_uses_the_calibration_method_and_sample_count(heavy_tailed):
    from kerascompress.export.tflite import to_tflite
    from kerascompress.quant.plan import PrecisionPlan

    model, x = heavy_tailed
    scales = {m: _input_scale(to_tflite(model, PrecisionPlan("int8", calibration=m), representative_data=x,
                                           num_samples=len(x)))
              for m in ("minmax", "percentile", "mse")}
    assert scales["minmax"] == pytest.approx((float(x.max()) - float(x.min())) / 255, rel=1e-3)
    assert scales["percentile"] < 0.9 * scales["minmax"]
    assert scales["mse"] < 0.99 * scales["minmax"]  # clips the rarest values only
    # the sample count is honoured: 8 samples see a narrower range than 512
    few = _input_scale(to_tflite(model, PrecisionPlan("int8"), representative_data=x, num_samples=8))
    assert few == pytest.approx((float(x[:8].max()) - float(x[:8].min())) / 255, rel=1e-3)


def test_litert_refuses_a_plan_mixing_fp16_and_int8(digits_cnn, digits_data):
    plan = PrecisionPlan("mixed", layer_precisions=(("conv1", "fp16"), ("conv2", "int8")))
    with pytest.raises(ConfigError, match="fp16"):
        to_tflite(digits_cnn, plan, representative_data=digits_data[0])
    ok = PrecisionPlan("mixed", layer_precisions=(("conv1", "fp32"), ("conv2", "int8"), ("fc1", "int8"),
                                                   ("predictions", "int8")))
    assert len(to_tflite(digits_cnn, ok, representative_data=digits_data[0][:64])) > 0


def test_ops_without_int8_kernels_are_named(digits_data):
    inp = keras.Input((8, 8, 1), name="image")
    h = layers.Flatten(name="flatten")(inp)
    h = layers.Dense(8, name="fc")(h)
    h = keras.ops.sin(h)
    model = keras.Model(inp, layers.Dense(3, name="head")(h))
    q = fq.fake_quant_model(model)
    fq.calibrate(q, digits_data[0][:64])
    with pytest.raises(ExportError, match="SIN"):
        to_tflite(q.model, PrecisionPlan("int8", int8_io=True), representative_data=digits_data[0][:64])


def test_fp16_accumulation_is_recorded_only_when_asked_and_only_for_fp16():
    from kerascompress.export.tflite_graph import reduced_precision_support

    inp = keras.Input((8,))
    model = keras.Model(inp, keras.layers.Dense(4)(keras.layers.Dense(16, activation="relu")(inp)))
    assert reduced_precision_support(to_tflite(model, "fp16")) == "fp16accfp32"  # XNNPACK: FP32 compute
    assert reduced_precision_support(to_tflite(model, "fp16", fp16_accumulation=True)) == "fp16accfp16"
    assert reduced_precision_support(to_tflite(model, "float32", fp16_accumulation=True)) is None


def test_a_converter_that_ignores_the_fp16_accumulation_request_is_an_export_error(monkeypatch):
    from kerascompress.export import tflite as tflite_mod

    monkeypatch.setattr(tflite_mod, "request_fp16_accumulation", lambda converter: None)
    inp = keras.Input((8,))
    model = keras.Model(inp, keras.layers.Dense(4)(inp))
    with pytest.raises(ExportError, match="wrote reduced_precision_support='fp16accfp32'.*compute this FP16 model in FP32"):
        to_tflite(model, "fp16", fp16_accumulation=True)
