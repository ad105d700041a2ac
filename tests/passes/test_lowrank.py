"""Tests for the LowRank pass: the per-layer decision (estimate, accuracy, measured
latency — with injected timings and with one real measurement), rank choice, nested
models, the report's layer map, exports to TFLite and ONNX, and the caller's model."""
from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import layers

from kerascompress.data.bundle import DataBundle
from kerascompress.errors import ConfigError
from kerascompress.graph import decompose as dec
from kerascompress.graph.model_graph import ModelGraph
from kerascompress.models.io import weights_digest
from kerascompress.passes.base import ModelState, PassContext
from kerascompress.passes.lowrank import Candidate, LowRank, judge
from kerascompress.pipeline.measure import pass_context
from kerascompress.targets.cpuinfo import host_cpu
from kerascompress.targets.target import Target

FAR = Target(name="arm-phone", arch="arm64", channel_multiple=1)  # never runs on this host
_HOST = host_cpu()
HERE = Target(name="litert-here", arch=_HOST.arch, isa_features=tuple(sorted(_HOST.flags)))  # this host's CPU: runs here


def _low_rank_mlp(n_in=128, hidden=256, rank=16, seed=0, name="mlp"):
    """fc1's kernel has exact rank ``rank``: a factorization at that rank loses nothing."""
    rng = np.random.default_rng(seed)
    inp = keras.Input((n_in,), name="features")
    h = layers.Dense(hidden, activation="relu", name="fc1")(inp)
    out = layers.Dense(10, activation="softmax", name="out")(h)
    model = keras.Model(inp, out, name=name)
    k = (rng.standard_normal((n_in, rank)) @ rng.standard_normal((rank, hidden)) / np.sqrt(n_in * rank))
    model.get_layer("fc1").set_weights([k.astype(np.float32), rng.standard_normal(hidden).astype(np.float32) * 0.1])
    return model


def _bundle(model, n=500, seed=0):
    """Labels = the model's own predictions, so the baseline is exactly 100%."""
    shape = tuple(model.inputs[0].shape[1:])
    x = np.random.default_rng(seed).standard_normal((n,) + shape).astype(np.float32)
    y = model.predict(x, verbose=0).argmax(-1)
    k = int(n * 0.6)
    return DataBundle(x[:k], y[:k], x[k:], y[k:])


def _ctx(target, data=None, teacher=None):
    """The driver's services: real exports and (where this host stands in for the target) real timings."""
    return pass_context(target, data, teacher=teacher, progress=lambda m: None)


class _FakeArtifact:
    kind, precision, size_bytes = "tflite", "float32", 1


def _injected(timer, data=None, target=None):
    """A context whose builder makes placeholders and whose timer is ``timer`` (labels -> median ms)."""
    return PassContext(target=target or HERE, data=data, progress=lambda m: None, builder=lambda s: _FakeArtifact(),
                       timer=lambda artifacts, runs: timer(artifacts), measures_latency=True)


def _cand(macs_before=1000, macs_after=500, method="svd", rank=8):
    return Candidate(method, rank, 64, 0.9, dec.Cost(2 * macs_before, macs_before), dec.Cost(2 * macs_after, macs_after))


# ------------------------------------------------------------------ decision rule
def test_judge_with_injected_timings():
    head = "Dense 'fc1' rank 96"
    c = _cand(1300, 1000)
    keep, why = judge(head, c, "litert-x86", speedup=0.92)
    assert not keep
    assert why == "Dense 'fc1' rank 96: 1.30x fewer MACs but 0.92x speed on litert-x86: kept original"
    keep, why = judge(head, c, "litert-x86", speedup=1.4)
    assert keep and "1.40x speed on litert-x86: decomposed" in why
    keep, why = judge(head, c, "litert-x86", speedup=1.04, min_speedup=1.05)
    assert not keep
    keep, why = judge(head, _cand(1000, 1200), "litert-x86", speedup=5.0)
    assert not keep and "MORE MACs" in why  # the estimate refuses before any timing counts
    keep, why = judge(head, c, "litert-x86", speedup=2.0, accuracy_drop=0.03, budget=0.01)
    assert not keep and "accuracy falls 3.00 points (budget 1.00)" in why
    keep, why = judge(head, c, "arm-phone", speedup=None)
    assert keep and "latency not measured" in why and "decomposed by the estimate" in why


def test_gate_allows_everywhere_and_says_what_is_verified():
    model = _low_rank_mlp()
    g_far = LowRank().gate(FAR, ModelState(model))
    g_here = LowRank().gate(HERE, ModelState(model))
    assert g_far.allowed and g_here.allowed
    assert g_far.benefit == g_here.benefit == "size+latency"
    assert "NOT verified" in g_far.reason
    if HERE.runs_here():
        assert "by measurement" in g_here.reason


def test_config_errors():
    with pytest.raises(ConfigError):
        LowRank(energy=0)
    with pytest.raises(ConfigError):
        LowRank(param_ratio=0.5)
    with pytest.raises(ConfigError):
        LowRank(conv_method="tucker")
    with pytest.raises(ConfigError):
        LowRank(ranks={"fc1": 0})


def test_choose_rank_energy_ratio_per_layer_and_rounding():
    model = _low_rank_mlp(n_in=128, hidden=256, rank=16)
    node = ModelGraph.from_keras(model).nodes["fc1"]
    f = dec.svd(node, "svd")
    assert LowRank(energy=0.999999).choose_rank(node, f, ["fc1"], 1) == 16
    assert LowRank(energy=0.999999).choose_rank(node, f, ["fc1"], 12) == 24  # rounded up to the multiple
    # param_ratio 4: r * (128 + 256) + 256 <= (128 * 256 + 256) / 4  ->  r <= 20.8 -> 20, rounded down to 16
    assert LowRank(param_ratio=4).choose_rank(node, f, ["fc1"], 1) == 20
    assert LowRank(param_ratio=4).choose_rank(node, f, ["fc1"], 8) == 16
    assert LowRank(ranks={"fc1": 5}).choose_rank(node, f, ["fc1"], 1) == 5
    assert LowRank(ranks={"fc1": 5}).choose_rank(node, f, ["fc1"], 8) == 8
    assert LowRank(ranks={"fc1": 999}).choose_rank(node, f, ["fc1"], 8) == 128  # capped at full rank


# ------------------------------------------------------------------ the pass
def test_decomposes_by_estimate_when_target_not_here_and_caller_unchanged():
    model = _low_rank_mlp()
    digest = weights_digest(model)
    data = _bundle(model)
    out = LowRank(energy=0.999, min_params=1000).apply(ModelState(model), _ctx(FAR, data))
    d = out.details
    assert d["latency_measured"] is False and "not measured" in d["note"]
    assert d["replacements"] == {"fc1": ["fc1_lr1", "fc1_lr2"]}
    fc1 = d["layers"]["fc1"]
    assert fc1["status"] == "decomposed" and fc1["rank"] == 16 and fc1["speedup"] is None
    assert "latency not measured (arm-phone does not run on this host)" in fc1["reason"]
    assert d["layers"]["out"]["status"] == "kept" and "MORE MACs" in d["layers"]["out"]["reason"]
    new = out.state.model
    assert [layer.name for layer in new.layers if "fc1" in layer.name] == ["fc1_lr1", "fc1_lr2"]
    assert d["params_after"] == model.count_params() - 128 * 256 + 16 * (128 + 256)
    x = data.x_eval
    assert np.abs(new.predict(x, verbose=0) - model.predict(x, verbose=0)).max() < 1e-4
    assert weights_digest(model) == digest
    assert out.state.model is not model


def test_refuses_a_rank_that_raises_macs_before_measuring():
    inp = keras.Input((64,))
    model = keras.Model(inp, layers.Dense(64, name="sq")(inp))

    def no_timing(*a, **k):
        raise AssertionError("a decomposition refused by the estimate must not be built or timed")

    ctx = PassContext(target=HERE, progress=lambda m: None, builder=no_timing, timer=no_timing, measures_latency=True)
    state = ModelState(model)
    out = LowRank(ranks={"sq": 48}, min_params=0).apply(state, ctx)
    entry = out.details["layers"]["sq"]
    assert entry["status"] == "kept"
    assert entry["reason"].startswith("Dense 'sq' rank 48: 1.50x MORE MACs")
    assert out.state is state and out.details["replacements"] == {}


def test_refuses_a_measured_slower_decomposition():
    """Injected timings: fewer MACs by the estimate, but slower when 'measured'."""
    model = _low_rank_mlp()
    state = ModelState(model)
    ctx = _injected(lambda artifacts: {"before": 1.0, "c0": 1.25}, _bundle(model))
    out = LowRank(energy=0.999, min_params=1000).apply(state, ctx)
    entry = out.details["layers"]["fc1"]
    assert entry["status"] == "kept" and entry["speedup"] == pytest.approx(0.8)
    assert entry["reason"] == f"Dense 'fc1' rank 16: {entry['mac_ratio']:.2f}x fewer MACs but 0.80x speed on litert-here: kept original"
    assert out.state is state


def test_timing_failure_falls_back_to_the_estimate_and_says_so():
    model = _low_rank_mlp()

    def broken(artifacts):
        raise RuntimeError("interpreter crashed")

    out = LowRank(energy=0.999, min_params=1000).apply(ModelState(model), _injected(broken, _bundle(model)))
    entry = out.details["layers"]["fc1"]
    assert entry["status"] == "decomposed" and entry["speedup"] is None
    assert "timing on litert-here failed: RuntimeError: interpreter crashed" in entry["reason"]


def test_conv_method_chosen_by_measured_latency():
    """Both conv factorizations pass the estimate; the one measured faster wins, not the one with fewer MACs."""
    inp = keras.Input((16, 16, 32))
    h = layers.Conv2D(64, 3, padding="same", name="conv")(inp)
    model = keras.Model(inp, layers.GlobalAveragePooling2D()(h))
    ctx = _injected(lambda artifacts: {"before": 1.0, "c0": 0.9, "c1": 0.5})
    out = LowRank(ranks={"conv": 8}, min_params=0, max_accuracy_drop=1.0).apply(ModelState(model), ctx)
    entry = out.details["layers"]["conv"]
    macs = {c["method"]: c["macs_after"] for c in entry["candidates"]}
    slower_by_estimate = max(macs, key=macs.get)
    assert entry["status"] == "decomposed" and entry["method"] == slower_by_estimate
    assert entry["speedup"] == pytest.approx(2.0)


def test_real_measurement_is_interleaved_and_decision_consistent():
    """One real LiteRT measurement. No timing is asserted: only that it happened and the rule was applied."""
    if not HERE.runs_here():
        pytest.skip("needs an x86_64 host to run the LiteRT CPU target")
    model = _low_rank_mlp(n_in=512, hidden=512, rank=16)
    p = LowRank(energy=0.999, min_params=1000, latency_runs=40)
    out = p.apply(ModelState(model), _ctx(HERE, _bundle(model, n=300)))
    entry = out.details["layers"]["fc1"]
    assert out.details["latency_measured"] is True
    assert isinstance(entry["speedup"], float) and entry["speedup"] > 0
    assert entry["latency_ms_before"] > 0 and entry["latency_ms_after"] > 0
    assert entry["status"] == ("decomposed" if entry["speedup"] >= p.min_speedup else "kept")
    assert "speed on litert-here" in entry["reason"]


def test_nested_model_report_maps_original_paths():
    inner = _low_rank_mlp(name="backbone")
    inp = keras.Input((128,), name="x")
    model = keras.Model(inp, layers.Dense(4, name="top")(inner(inp)), name="outer")
    data = (np.random.default_rng(1).standard_normal((200, 128)).astype(np.float32))
    bundle = DataBundle(data[:100], None, data[100:], None)
    out = LowRank(energy=0.999, min_params=1000).apply(ModelState(model), _ctx(FAR, bundle))
    assert out.details["replacements"] == {"backbone/fc1": ["fc1_lr1", "fc1_lr2"]}
    assert "top-1 agreement" in out.details["accuracy_metric"]
    diff = np.abs(out.state.model.predict(data, verbose=0) - model.predict(data, verbose=0)).max()
    assert diff < 1e-4


def test_accuracy_budget_refuses_a_harmful_rank(digits_cnn, digits_data):
    _, _, xt, yt = digits_data
    data = DataBundle(xt[:50], yt[:50], xt, yt)
    out = LowRank(ranks={"fc1": 1}, layers=["fc1"], min_params=0).apply(ModelState(digits_cnn), _ctx(FAR, data))
    entry = out.details["layers"]["fc1"]
    assert entry["status"] == "kept" and "accuracy falls" in entry["reason"]
    assert list(out.details["layers"]) == ["fc1"]


def test_no_data_uses_random_inputs():
    model = _low_rank_mlp()
    out = LowRank(energy=0.999, min_params=1000).apply(ModelState(model), _ctx(FAR))
    assert "random inputs" in out.details["accuracy_metric"]
    assert out.details["layers"]["fc1"]["status"] == "decomposed"


def _onnx_predict(model, x):
    import onnxruntime as ort
    import tensorflow as tf
    import tf2onnx

    spec = [tf.TensorSpec((None,) + tuple(model.inputs[0].shape[1:]), tf.float32, name="x")]

    @tf.function(input_signature=spec, autograph=False)
    def serve(t):
        return model(t, training=False)

    proto, _ = tf2onnx.convert.from_function(serve, input_signature=spec, opset=17)
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def _tflite_predict(model, x):
    from ai_edge_litert.interpreter import Interpreter

    from kerascompress.export.tflite import to_tflite

    it = Interpreter(model_content=to_tflite(model, "float32"), num_threads=1)
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    it.resize_tensor_input(inp["index"], x.shape)
    it.allocate_tensors()
    it.set_tensor(inp["index"], x)
    it.invoke()
    return it.get_tensor(out["index"])


def test_decomposed_cnn_exports_to_tflite_and_onnx_and_matches(digits_cnn, digits_data):
    xtr, ytr, xt, yt = digits_data
    data = DataBundle(xtr[:100], ytr[:100], xt, yt)
    p = LowRank(ranks={"conv2": 8, "fc1": 16}, conv_method="spatial", min_params=0, max_accuracy_drop=1.0)
    out = p.apply(ModelState(digits_cnn), _ctx(FAR, data))
    reps = out.details["replacements"]
    assert reps["conv2"] == ["conv2_lr1", "conv2_lr2"] and reps["fc1"] == ["fc1_lr1", "fc1_lr2"]
    assert out.details["layers"]["conv2"]["method"] == "spatial"
    model = out.state.model
    assert model.get_layer("conv2_lr1").kernel.shape == (3, 1, 16, 8)
    assert model.get_layer("conv2_lr2").kernel.shape == (1, 3, 8, 32)
    x = xt[:32]
    ref = model.predict(x, verbose=0)
    assert np.abs(_tflite_predict(model, x) - ref).max() < 1e-4
    assert np.abs(_onnx_predict(model, x) - ref).max() < 1e-4


def test_finetune_with_distillation(digits_cnn, digits_data):
    xtr, ytr, xt, yt = digits_data
    data = DataBundle(xtr[:400], ytr[:400], xt, yt)
    p = LowRank(ranks={"fc1": 8}, layers=["fc1"], min_params=0, finetune_epochs=1,
                max_accuracy_drop_before_finetune=1.0)
    out = p.apply(ModelState(digits_cnn), _ctx(FAR, data, teacher=digits_cnn))
    ft = out.details["finetune"]
    assert ft["status"] == "done" and ft["distilled"] is True and "accuracy_drop_after" in ft
    assert out.details["replacements"] == {"fc1": ["fc1_lr1", "fc1_lr2"]}


@pytest.mark.slow
def test_latency_measured_at_the_states_int8_precision(digits_cnn, digits_data):
    """After a Quantize pass the factorization is timed as the int8 model the target will run."""
    if not HERE.runs_here():
        pytest.skip("needs an x86_64 host to run the LiteRT CPU target")
    from kerascompress.quant.plan import PrecisionPlan

    xtr, ytr, xt, yt = digits_data
    data = DataBundle(xtr[:200], ytr[:200], xt, yt)
    state = ModelState(digits_cnn, PrecisionPlan(mode="int8"))
    p = LowRank(ranks={"conv2": 8, "fc1": 16}, min_params=0, max_accuracy_drop=1.0, latency_runs=30)
    out = p.apply(state, _ctx(HERE, data))
    assert out.state.precision.mode == "int8"
    for name in ("conv2", "fc1"):
        entry = out.details["layers"][name]
        assert isinstance(entry["speedup"], float)
        assert entry["status"] == ("decomposed" if entry["speedup"] >= p.min_speedup else "kept")
