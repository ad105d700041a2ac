"""optimize() with validation data, budgets and the default search recipe, end to end on digits."""
import json

import keras
import numpy as np
import pytest

import kerascompress as kc
from kerascompress.passes.base import Gate, Pass, PassOutput
from kerascompress.passes.channel_search import ChannelSearch
from kerascompress.passes.quantize import Quantize
from kerascompress.pipeline.profile import profile_latency
from kerascompress.search.cost_table import CostTable


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
    assert path.is_file() and table.unit == "ms" and table.base > 0
    assert "kerascompress profile" in CostTable.load(path).source
    x, y, xt, yt = digits_data
    result = kc.optimize(
        digits_cnn, target="arm64-cortex-a72", data=(x, y), validation_data=(xt, yt), output_dir=tmp_path / "out",
        recipe=[Quantize("int8"), ChannelSearch(rank_epochs=0.1, final_epochs=1, max_candidates=2)],
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
                         recipe=[ChannelSearch(max_candidates=1)], latency_table=path, output_dir=tmp_path / "o",
                         verbose=False)
    step = result.report.step("channel_search")
    assert step.status == "failed" and "different model" in step.reason
