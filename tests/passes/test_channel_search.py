"""ChannelSearch with injected timings and verdicts: bisection, step-back, keeping what passed, honest failure.

The cost of a model is injected as its parameter count (a fake timer) and the verdict
as a rule on that count (a fake judge), so every decision is exact; pruning and the
brief distillation are real, on sklearn digits.
"""
import types

import numpy as np
import pytest

from kerascompress.data.bundle import DataBundle
from kerascompress.passes.base import ModelState, PassContext
from kerascompress.passes.channel_search import ChannelSearch
from kerascompress.pipeline.types import Constraints
from kerascompress.targets.target import Target

HERE = Target(name="test-here", channel_multiple=8)


class Judge:
    """Verdicts as a rule on the candidate's parameter count; records every call."""

    def __init__(self, threshold, rejudge_drop=None):
        self.threshold, self.rejudge_drop, self.calls = threshold, rejudge_drop, []

    def __call__(self, state):
        params = state.model.count_params()
        again = params in self.calls
        self.calls.append(params)
        drop = 0.0 if params >= self.threshold else 0.5
        if again and self.rejudge_drop is not None:
            drop = self.rejudge_drop
        return types.SimpleNamespace(accuracy=1 - drop, top1_agreement=None, accuracy_drop=drop,
                                     accuracy_drop_se=0.001, latency_ms=params / 1000, size_bytes=params, macs=0)


def _ctx(model, digits_data, judge, **constraints):
    x, y, _, _ = digits_data
    return PassContext(
        target=HERE, data=DataBundle(x[:600], y[:600], x[600:700], y[600:700], calibration_samples=64),
        teacher=model, progress=lambda m: None, seed=0, constraints=Constraints(**constraints),
        builder=lambda s: s.model.count_params(), timer=lambda arts, runs: {k: v / 1000 for k, v in arts.items()},
        judger=judge, measures_latency=True,
    )


def _search(**kw):
    args = dict(rank_epochs=0.1, final_epochs=1, batch_size=64, tolerance=0.0, max_candidates=20, probe_samples=64,
                monitor_samples=64)
    args.update(kw)
    return ChannelSearch(**args)


def test_bisection_converges_on_the_cheapest_candidate_within_budget(digits_cnn, digits_data):
    params0 = digits_cnn.count_params()
    judge = Judge(threshold=0.55 * params0)
    out = _search().apply(ModelState(digits_cnn), _ctx(digits_cnn, digits_data, judge))
    d = out.details
    assert d["cost_model"]["source"].startswith("measured here") and d["cost_model"]["unit"] == "ms"
    rank = [c for c in d["candidates"] if c["phase"] == "rank"]
    passed = [c["index"] for c in rank if c["verdict"] == "within budget"]
    failed = [c["index"] for c in rank if c["verdict"] == "over budget"]
    assert passed and failed and max(passed) + 1 == min(failed)  # converged: neighbours on the path
    assert len(rank) <= int(np.ceil(np.log2(d["path_length"]))) + 1
    assert d["chosen"]["index"] == max(passed) and d["chosen"]["size_bytes"] >= 0.55 * params0
    assert out.state.model.count_params() == d["chosen"]["size_bytes"]
    assert out.state.model is not digits_cnn and digits_cnn.count_params() == params0


def test_steps_back_toward_the_original_when_nothing_passed_briefly(digits_cnn, digits_data):
    params0 = digits_cnn.count_params()
    judge = Judge(threshold=0.8 * params0)
    out = _search(max_candidates=1).apply(ModelState(digits_cnn), _ctx(digits_cnn, digits_data, judge))
    d = out.details
    rank = [c for c in d["candidates"] if c["phase"] == "rank"]
    final = [c for c in d["candidates"] if c["phase"] == "final"]
    assert len(rank) == 1 and rank[0]["verdict"] == "over budget"
    assert final[0]["index"] == rank[0]["index"] and final[0]["verdict"] == "over budget"
    assert all(b["index"] < a["index"] for a, b in zip(final, final[1:]))  # each step milder than the last
    if d.get("chosen"):
        assert d["chosen"]["phase"] == "final" and d["chosen"]["size_bytes"] >= 0.8 * params0
    else:
        assert "no pruned candidate kept the accuracy budget" in d["nothing_passed"]


def test_keeps_the_briefly_distilled_candidate_when_the_long_run_measures_worse(digits_cnn, digits_data):
    params0 = digits_cnn.count_params()
    judge = Judge(threshold=0.55 * params0, rejudge_drop=0.3)  # any second verdict on the same widths fails
    out = _search().apply(ModelState(digits_cnn), _ctx(digits_cnn, digits_data, judge))
    chosen = out.details["chosen"]
    assert chosen["phase"] == "rank" and "longer run measured worse" in chosen["note"]
    assert out.state.model.count_params() == chosen["size_bytes"]


def test_nothing_passes_leaves_the_model_and_says_how_close(digits_cnn, digits_data):
    judge = Judge(threshold=10 ** 9)
    state = ModelState(digits_cnn)
    out = _search(max_candidates=2).apply(state, _ctx(digits_cnn, digits_data, judge))
    assert out.state is state
    assert out.details["nothing_passed"].startswith("no pruned candidate kept the accuracy budget")
    assert "the closest: drop +50.00 points" in out.details["nothing_passed"]


def test_time_budget_stops_the_search(digits_cnn, digits_data):
    judge = Judge(threshold=0)
    state = ModelState(digits_cnn)
    out = _search().apply(state, _ctx(digits_cnn, digits_data, judge, max_search_seconds=0.001))
    assert [c for c in out.details["candidates"] if c["phase"] == "rank"] == []
    assert out.state is state and out.details["stopped_by_time_budget"]
    assert "time budget (max_search_seconds=0) ran out before a candidate was tried" in out.details["nothing_passed"]


def test_size_objective_counts_bytes_at_the_precision(digits_cnn, digits_data):
    from kerascompress.quant.plan import PrecisionPlan

    judge = Judge(threshold=0.5 * digits_cnn.count_params())
    state = ModelState(digits_cnn, PrecisionPlan("int8"))
    out = _search(max_candidates=3).apply(state, _ctx(digits_cnn, digits_data, judge, objective="size"))
    cm = out.details["cost_model"]
    assert cm["unit"] == "bytes" and cm["base"] == pytest.approx(digits_cnn.count_params() * 1.0)
    assert out.state.precision.mode == "int8"
