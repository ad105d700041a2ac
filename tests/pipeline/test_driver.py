"""End to end: optimize() gates, measures, rolls back, reports, and never touches the caller's model."""
import json

import keras
import numpy as np
import pytest

import kerascompress as kc
from kerascompress.models.copy import copy_model
from kerascompress.models.io import weights_digest
from kerascompress.passes.base import Gate, Pass, PassOutput
from kerascompress.passes.channel_search import ChannelSearch
from kerascompress.passes.quantize import Quantize
from kerascompress.pipeline.profile import profile_latency
from kerascompress.search.cost_model import CostModel


def test_int8_on_this_host_is_applied_and_fp16_then_refused(digits_cnn, digits_split, tmp_path):
    from kerascompress.runtime.litert import LiteRTModel
    from kerascompress.runtime.onnx_runner import OnnxModel

    digest = weights_digest(digits_cnn)
    result = kc.optimize(  # "auto": this host's own profile, so latency is really measured on any CI machine
        digits_cnn, target="auto", data=digits_split, recipe="quantize",
        output_dir=tmp_path, latency_runs=20, verbose=False,
    )
    assert weights_digest(digits_cnn) == digest
    report = result.report
    int8 = report.step("quantize:int8")
    assert int8.status == "applied", int8.reason
    assert int8.benefit == "size+latency"
    base = report.baseline
    assert base.accuracy > 0.85
    assert base.accuracy - int8.after.accuracy <= 0.01
    assert int8.after.size_bytes < 0.4 * base.size_bytes
    # latency was timed here, before and after interleaved; an applied pass is never slower than the tolerance
    assert base.latency_ms > 0 and int8.after.latency_ms > 0
    assert 0.05 < int8.latency_ratio <= kc.Constraints().max_slowdown
    fp16 = report.step("quantize:fp16")
    assert fp16.status == "skipped" and "already" in fp16.reason
    assert report.final.precision == "int8"
    assert report.final.latency_ms > 0
    assert 0.05 < report.final_latency_ratio <= kc.Constraints().max_slowdown
    # every artifact is on disk and computes the model: int8 TFLite within a point, float ONNX within float noise
    x_eval, y_eval = digits_split["eval"]
    reference = digits_cnn.predict(x_eval, verbose=0)
    tflite = LiteRTModel(result.artifacts["tflite"].read_bytes()).predict(x_eval)
    assert np.mean(tflite.argmax(-1) == reference.argmax(-1)) > 0.97
    onnx_out = OnnxModel(result.artifacts["onnx"].read_bytes()).predict(x_eval)
    assert np.abs(onnx_out - reference).max() < 1e-4
    float_tflite = LiteRTModel(result.artifacts["tflite_float32"].read_bytes()).predict(x_eval)
    assert np.abs(float_tflite - reference).max() < 1e-4
    np.testing.assert_allclose(keras.models.load_model(result.artifacts["keras"]).predict(x_eval, verbose=0),
                               reference, atol=1e-6)
    assert not list(tmp_path.glob(".partial-*"))
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["steps"][0]["status"] == "applied"
    assert saved["steps"][0]["after"]["accuracy"] == pytest.approx(int8.after.accuracy)
    assert "| quantize:int8 | applied |" in (tmp_path / "report.md").read_text()
    assert result.model is not digits_cnn


def test_accuracy_budget_rolls_back_and_fp16_is_storage_only(digits_cnn, digits_split, tmp_path):
    class Sabotage(Pass):
        """Zeroes the last layer: a pass that ruins accuracy must be rolled back."""

        name = "sabotage"

        def gate(self, target, state):
            return Gate.allow("size")

        def apply(self, state, ctx):
            model = copy_model(state.model)
            last = model.layers[-1]
            last.set_weights([np.zeros_like(w) for w in last.get_weights()])
            return PassOutput(state.replace(model=model))

    result = kc.optimize(
        digits_cnn, target="x86-avx2", data=digits_split, recipe=[Sabotage(), Quantize("fp16")],
        output_dir=tmp_path, latency_runs=10, verbose=False,
    )
    sab = result.report.step("sabotage")
    assert sab.status == "rolled back" and "points below the float32 baseline" in sab.reason
    fp16 = result.report.step("quantize:fp16")
    assert fp16.status == "applied" and fp16.benefit == "size"
    assert "storage-only" in fp16.reason
    assert fp16.after.size_bytes < 0.6 * fp16.before.size_bytes
    x = digits_split["eval"][0][:20]
    np.testing.assert_allclose(result.model.predict(x, verbose=0), digits_cnn.predict(x, verbose=0), atol=1e-6)


def test_integer_only_target_gets_int8_io_and_refuses_float(digits_cnn, digits_split, tmp_path):
    result = kc.optimize(
        digits_cnn, target="edgetpu", data=digits_split, recipe="quantize", output_dir=tmp_path, verbose=False,
    )
    steps = {s.name: s for s in result.report.steps}
    assert steps["quantize:int8"].status == "applied"
    assert steps["quantize:fp16"].status == "skipped"
    assert result.report.final.latency_ms is None  # an Edge TPU is not this host
    assert any("latency not measured here" in n for n in result.report.notes)
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=result.artifacts["tflite"].read_bytes())
    assert interp.get_input_details()[0]["dtype"] == np.int8
    assert interp.get_output_details()[0]["dtype"] == np.int8


def test_without_data_int8_is_skipped_and_fidelity_is_on_random_inputs(digits_cnn, tmp_path):
    result = kc.optimize(digits_cnn, target="x86-avx2", recipe="quantize", output_dir=tmp_path,
                         latency_runs=10, verbose=False)
    assert result.report.step("quantize:int8").status == "skipped"
    assert "needs data" in result.report.step("quantize:int8").reason
    assert result.report.step("quantize:fp16").status == "applied"
    assert result.report.final.accuracy is None
    assert result.report.final.top1_agreement >= 0.95


def test_strict_mode_raises_on_a_refused_pass(digits_cnn, digits_split, tmp_path):
    with pytest.raises(kc.UnsupportedOnTarget, match="full-integer"):
        kc.optimize(digits_cnn, target="edgetpu", data=digits_split, recipe=[Quantize("fp16")],
                    output_dir=tmp_path, strict=True, verbose=False)


def test_bad_inputs_are_named(digits_cnn, tmp_path):
    with pytest.raises(kc.ConfigError, match="unknown"):
        kc.optimize(digits_cnn, target="quantum-9000", output_dir=tmp_path, verbose=False)
    with pytest.raises(kc.DataError, match=r"expects samples of shape \(8, 8, 1\)"):
        kc.optimize(digits_cnn, target="x86-avx2", data=(np.zeros((50, 28, 28, 1)), np.zeros(50)),
                    output_dir=tmp_path, verbose=False)


def test_a_compressed_size_pass_that_gains_nothing_is_rolled_back(digits_cnn, digits_split, tmp_path):
    class Nothing(Pass):
        """Claims to buy compressed size, changes nothing."""

        name = "nothing"

        def gate(self, target, state):
            return Gate.allow("compressed-size", "compressed (gzip) size only")

        def apply(self, state, ctx):
            return PassOutput(state.replace(model=copy_model(state.model)))

    result = kc.optimize(digits_cnn, target="x86-avx2", data=digits_split, recipe=[Nothing()],
                         constraints=kc.Constraints(max_slowdown=100.0), output_dir=tmp_path, latency_runs=3,
                         verbose=False)
    step = result.report.step("nothing")
    assert step.status == "rolled back" and "gzip size went from" in step.reason


def test_a_crashing_pass_is_reported_failed_and_the_run_goes_on(digits_cnn, digits_split, tmp_path):
    class Broken(Pass):
        name = "broken"

        def gate(self, target, state):
            return Gate.allow()

        def apply(self, state, ctx):
            raise ValueError("boom")

    result = kc.optimize(digits_cnn, target="x86-avx2", data=digits_split, recipe=[Broken(), Quantize("int8")],
                         output_dir=tmp_path, latency_runs=3, verbose=False)
    assert result.report.step("broken").status == "failed"
    assert result.report.step("broken").reason == "ValueError: boom"
    assert result.report.step("quantize:int8").status == "applied"
    with pytest.raises(ValueError, match="boom"):
        kc.optimize(digits_cnn, target="x86-avx2", data=digits_split, recipe=[Broken()], strict=True,
                    output_dir=tmp_path / "strict", verbose=False)


class SpyPass(Pass):
    """Records every array the pass could train or calibrate on."""

    name = "spy"
    needs_data = True
    seen: list = []

    def gate(self, target, state):
        return Gate.allow("size")

    def apply(self, state, ctx):
        d = ctx.data
        SpyPass.seen = [d.x_train, d.calibration(), d.selection(10 ** 6)[0]]
        return PassOutput(state.replace(model=kc.passes.base.ModelState(state.model).model))


def test_no_sample_of_validation_data_is_trained_or_calibrated_on(digits_cnn, digits_data, tmp_path):
    x, y, xt, yt = digits_data
    xv = -1.0 - xt  # sentinel: every validation pixel is negative, every training pixel >= 0
    result = kc.optimize(digits_cnn, target="x86-avx2", data=(x, y), validation_data=(xv, yt),
                         recipe=[SpyPass(), Quantize("int8")], output_dir=tmp_path, verbose=False, latency_runs=3)
    assert all((a >= 0).all() and len(a) for a in SpyPass.seen)
    assert len(SpyPass.seen[0]) == len(x)  # all of `data` is training data: nothing is held out of it
    base = result.report.baseline
    assert base.samples == len(xt)  # verdicts use all of the validation data
    assert base.accuracy_se == pytest.approx(np.sqrt(base.accuracy * (1 - base.accuracy) / len(xt)))
    int8 = result.report.step("quantize:int8").after
    assert int8.accuracy_drop == pytest.approx(base.accuracy - int8.accuracy)
    assert int8.accuracy_drop_se is not None and int8.accuracy_drop_se >= 0
    assert not any("split from `data`" in n for n in result.report.notes)


def test_a_split_of_data_is_flagged_as_possibly_memorised(digits_cnn, digits_data, tmp_path):
    x, y, _, _ = digits_data
    result = kc.optimize(digits_cnn, target="x86-avx2", data=(x, y), recipe=[Quantize("int8")],
                         output_dir=tmp_path, verbose=False, latency_runs=3)
    assert any("split from `data`" in n and "validation_data" in n for n in result.report.notes)


def test_default_recipe_searches_and_reports_the_trade_off(digits_cnn, digits_data, tmp_path):
    x, y, xt, yt = digits_data
    result = kc.optimize(
        digits_cnn, target="auto", data=(x, y), validation_data=(xt, yt), output_dir=tmp_path, verbose=False,
        constraints=kc.Constraints(max_accuracy_drop=0.02, max_search_seconds=120), latency_runs=10,
    )
    report = result.report
    search = report.step("channel_search")
    assert search.status in ("applied", "skipped", "rolled back"), search.reason
    cands = search.details["candidates"]
    assert cands and all({"widths", "latency_ms", "accuracy", "verdict"} <= set(c) for c in cands)
    md = (tmp_path / "report.md").read_text()
    assert "## channel_search: candidates" in md and "![accuracy against latency and size](search.png)" in md
    assert (tmp_path / "search.png").stat().st_size > 10_000
    if search.status == "applied":
        assert report.final.accuracy >= report.baseline.accuracy - 0.02
        assert report.final.params < report.baseline.params
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["figures"] == {"search": "search.png"}


def test_latency_budget_is_reported_met_or_missed(digits_cnn, digits_data, tmp_path):
    x, y, xt, yt = digits_data
    result = kc.optimize(digits_cnn, target="auto", data=(x, y), validation_data=(xt, yt), recipe=[Quantize("int8")],
                         constraints=kc.Constraints(latency_ratio=0.01, max_size_bytes=10 ** 9), output_dir=tmp_path,
                         verbose=False, latency_runs=10)
    met = result.report.constraints_met
    assert met["latency"] is False and met["size"] is True  # a hundredth of float32 is out of reach of int8 alone


def test_profile_writes_a_table_that_optimize_reads_for_a_far_target(digits_cnn, digits_data, tmp_path):
    path = tmp_path / "table.json"
    table = profile_latency(digits_cnn, target="auto", path=path, runs=5, progress=lambda m: None)
    assert path.is_file() and table.unit == "ms" and table.samples[0]["cost"] > 0 and table.fit_error is not None
    assert "kerascompress profile" in CostModel.load(path).source
    x, y, xt, yt = digits_data
    result = kc.optimize(
        digits_cnn, target="arm64-cortex-a72", data=(x, y), validation_data=(xt, yt), output_dir=tmp_path / "out",
        recipe=[Quantize("int8"), ChannelSearch(walk_epochs=0.1, final_epochs=1)],
        latency_table=path, verbose=False,
    )
    cm = result.report.step("channel_search").details["cost_model"]
    assert cm["unit"] == "ms" and "measured on the device" in cm["source"] and not cm["is_estimate"]


def test_a_table_for_another_model_is_refused(digits_cnn, digits_data, tmp_path):
    other = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(24, 3, name="c"), keras.layers.Flatten(),
                              keras.layers.Dense(10, activation="softmax")])
    path = tmp_path / "other.json"
    profile_latency(other, target="auto", path=path, runs=3, progress=lambda m: None)
    x, y, xt, yt = digits_data
    result = kc.optimize(digits_cnn, target="arm64-cortex-a72", data=(x, y), validation_data=(xt, yt),
                         recipe=[ChannelSearch(walk_epochs=0.1, final_epochs=1)], latency_table=path, output_dir=tmp_path / "o",
                         verbose=False)
    step = result.report.step("channel_search")
    assert step.status == "failed" and "different model" in step.reason
def test_a_regression_model_is_judged_by_output_error_not_accuracy(tmp_path):
    """Float targets are never cast to classes: fidelity is the relative MSE against the original."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 6)).astype("float32")
    y = (x @ rng.normal(size=(6,)) + 0.1 * rng.normal(size=600)).astype("float32")
    inp = keras.Input((6,))
    hidden = keras.layers.Dense(128, activation="relu")(keras.layers.Dense(128, activation="relu")(inp))
    model = keras.Model(inp, keras.layers.Dense(1)(hidden))  # big enough that int8 shrinks the file

    class Noise(Pass):
        """Perturbs the last layer: output error far beyond the budget."""

        name = "noise"

        def gate(self, target, state):
            return Gate.allow("size")

        def apply(self, state, ctx):
            noisy = copy_model(state.model)
            last = noisy.layers[-1]
            last.set_weights([w + 0.5 * rng.normal(size=w.shape).astype(w.dtype) for w in last.get_weights()])
            return PassOutput(state.replace(model=noisy))

    result = kc.optimize(model, target="x86-avx2", data=(x, y), recipe=[Noise(), Quantize("int8")],
                         output_dir=tmp_path, latency_runs=3, verbose=False)
    report = result.report
    assert report.baseline.accuracy is None and report.baseline.top1_agreement is None
    assert report.baseline.relative_mse < 1e-9  # the float32 TFLite computes the same function
    noise = report.step("noise")
    assert noise.status == "rolled back" and "relative MSE" in noise.reason
    assert noise.after.relative_mse > 0.01
    int8 = report.step("quantize:int8")
    assert int8.status == "applied", int8.reason
    assert 0 < int8.after.relative_mse <= 0.01
    assert report.constraints_met == {"max_accuracy_drop": True}
    assert any("relative MSE" in note for note in report.notes)
    assert "| rel. MSE |" in (tmp_path / "report.md").read_text()
