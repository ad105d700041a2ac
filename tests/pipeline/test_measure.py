"""Measuring states for the target: counts, fidelity against the original, interleaved timing where it means something."""
from __future__ import annotations

import keras
import numpy as np

from kerascompress.data.bundle import DataBundle
from kerascompress.passes.base import ModelState
from kerascompress.pipeline.measure import Measurer, count, pass_context, random_inputs
from kerascompress.quant.plan import PrecisionPlan
from kerascompress.targets.target import Kernel, Target

HERE = Target("here", precisions={"fp32": Kernel.FAST, "int8": Kernel.FAST})  # this host's arch: see runs_here
ELSEWHERE = Target("elsewhere", arch="armv7m", device="mcu", precisions={"int8": Kernel.FAST})


def _mlp() -> keras.Model:
    keras.utils.set_random_seed(0)
    inp = keras.Input((6,))
    return keras.Model(inp, keras.layers.Dense(3, activation="softmax")(keras.layers.Dense(8)(inp)))


def _quiet(_message: str) -> None:
    pass


def test_count_is_parameters_and_macs():
    assert count(_mlp()) == (6 * 8 + 8 + 8 * 3 + 3, 6 * 8 + 8 * 3)


def test_random_inputs_follow_the_model_inputs():
    a, b = keras.Input((4,)), keras.Input((2, 3))
    two = keras.Model([a, b], keras.layers.Concatenate()([a, keras.layers.Flatten()(b)]))
    xs = random_inputs(two, 5, seed=1)
    assert [x.shape for x in xs] == [(5, 4), (5, 2, 3)] and all(x.dtype == np.float32 for x in xs)
    np.testing.assert_array_equal(random_inputs(two, 5, seed=1)[0], xs[0])  # seeded
    assert random_inputs(_mlp(), 7, seed=0).shape == (7, 6)


def test_the_float_baseline_measures_as_the_original():
    model = _mlp()
    measurer = Measurer(model, HERE if HERE.runs_here() else ELSEWHERE, None, 64, 5, _quiet)
    state = ModelState(model)
    artifact = measurer.build(state)
    metrics = measurer.measure(state, artifact)
    assert artifact.kind == "tflite" and metrics.size_bytes == len(artifact.data)
    assert metrics.precision == "float32" and (metrics.params, metrics.macs) == count(model)
    assert metrics.top1_agreement == 1.0 and metrics.max_abs_error < 1e-5
    assert metrics.accuracy is None  # random inputs, no labels


def test_labelled_data_gives_accuracy():
    model = _mlp()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 6)).astype(np.float32)
    y = model.predict(x, verbose=0).argmax(-1)
    bundle = DataBundle(x[:150], y[:150], x[150:], y[150:])
    measurer = Measurer(model, ELSEWHERE, bundle, 1000, 5, _quiet)
    metrics = measurer.measure(ModelState(model), measurer.build(ModelState(model)))
    assert metrics.accuracy == 1.0  # labels are the model's own predictions


def test_latency_only_where_this_host_stands_in_for_the_target():
    model = _mlp()
    state = ModelState(model)
    far = Measurer(model, ELSEWHERE, None, 16, 5, _quiet)
    assert not far.measures_latency and far.time({"a": far.build(state)}) == {}
    assert far.context().time({"a": far.build(state)}) == {}
    if HERE.runs_here():
        near = Measurer(model, HERE, None, 16, 4, _quiet)
        stats = near.time({"a": near.build(state), "b": near.build(state)})
        assert set(stats) == {"a", "b"} and all(s.runs == 4 and s.median_ms > 0 for s in stats.values())


def test_pass_context_builds_at_the_states_precision_with_the_calibration_data():
    inp = keras.Input((64,))
    model = keras.Model(inp, keras.layers.Dense(10)(keras.layers.Dense(128)(inp)))  # big enough for int8 to pay
    x = np.random.default_rng(1).standard_normal((300, 64)).astype(np.float32)
    ctx = pass_context(ELSEWHERE, DataBundle(x[:200], None, x[200:], None), progress=_quiet)
    fp32 = ctx.build(ModelState(model))
    int8 = ctx.build(ModelState(model, PrecisionPlan("int8")))
    assert (fp32.precision, int8.precision) == ("float32", "int8")
    assert int8.size_bytes < 0.4 * fp32.size_bytes
    assert ctx.time({"fp32": fp32, "int8": int8}) == {}  # the target is not this host
