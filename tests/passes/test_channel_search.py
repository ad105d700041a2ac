"""ChannelSearch with injected timings and verdicts: bisection, step-back, keeping what passed, honest failure.

The cost of a model is injected as its parameter count (a fake timer) and the verdict
as a rule on that count (a fake judge), so every decision is exact; pruning and the
brief distillation are real, on sklearn digits.
"""
import types

import pytest

from kerascompress.data.bundle import DataBundle
from kerascompress.passes.base import ModelState, PassContext
from kerascompress.passes.channel_search import ChannelSearch
from kerascompress.pipeline.types import Constraints
from kerascompress.targets.target import Target

HERE = Target(name="test-here", channel_multiple=8)


class Judge:
    """Verdicts as rules on the candidate's parameter count; records every call.

    ``walk(params)`` gives the drop the first time a width configuration is judged (the
    walk), ``final(params)`` the drop of a second judgement of the same widths (after
    the long distillation).
    """

    def __init__(self, walk, final=None):
        self.walk, self.final, self.calls = walk, final, []

    def __call__(self, state):
        params = state.model.count_params()
        again = params in self.calls
        self.calls.append(params)
        drop = self.final(params) if again and self.final is not None else self.walk(params)
        return types.SimpleNamespace(accuracy=1 - drop, top1_agreement=None, accuracy_drop=drop,
                                     accuracy_drop_se=0.001, latency_ms=params / 1000, size_bytes=params, macs=0)


def _ctx(model, digits_data, judge, **constraints):
    x, y, _, _ = digits_data
    params = model.count_params()
    return PassContext(
        target=HERE, data=DataBundle(x[:600], y[:600], x[600:700], y[600:700], calibration_samples=64),
        teacher=model, progress=lambda m: None, seed=0, constraints=Constraints(**constraints),
        builder=lambda s: s.model.count_params(), timer=lambda arts, runs: {k: v / 1000 for k, v in arts.items()},
        judger=judge, measures_latency=True,
        baseline=types.SimpleNamespace(latency_ms=params / 1000, size_bytes=params),
    )


def _search(**kw):
    args = dict(walk_epochs=0.1, final_epochs=1, batch_size=64, probe_samples=64, monitor_samples=64,
                checkpoint_step=0.9)
    args.update(kw)
    return ChannelSearch(**args)


def _phases(details, phase):
    return [c for c in details["candidates"] if c["phase"] == phase]


def test_walk_goes_as_far_as_the_budget_allows_and_the_long_run_confirms(digits_cnn, digits_data):
    p0 = digits_cnn.count_params()
    judge = Judge(walk=lambda p: 0.0 if p >= 0.55 * p0 else 0.5)
    out = _search().apply(ModelState(digits_cnn), _ctx(digits_cnn, digits_data, judge))
    d = out.details
    walk = _phases(d, "walk")
    assert [c["verdict"] for c in walk][-1] == "over budget" and "exceeded the budget" in d["walk_end"]
    assert all(c["verdict"] == "within budget" for c in walk[:-1])
    assert all(b["predicted_cost"] < a["predicted_cost"] for a, b in zip(walk, walk[1:]))  # cheaper each step
    final = _phases(d, "final")
    assert final[0]["index"] == walk[-2]["index"]  # the long run starts at the cheapest checkpoint within reach
    chosen = d["chosen"]
    assert chosen["phase"] in ("final", "refine") and walk[-2]["index"] <= chosen["index"] < walk[-1]["index"]
    assert chosen["size_bytes"] >= 0.55 * p0 and out.state.model.count_params() == chosen["size_bytes"]
    # bisecting forward: every refinement that failed is smaller than the rule allows, every one that passed is not
    for c in _phases(d, "refine"):
        assert (c["verdict"] == "within budget") == (c["size_bytes"] >= 0.55 * p0)
    assert digits_cnn.count_params() == p0  # the caller's model is untouched


def test_steps_back_halfway_when_the_long_run_misses(digits_cnn, digits_data):
    p0 = digits_cnn.count_params()
    judge = Judge(walk=lambda p: 0.0 if p >= 0.8 * p0 else (0.015 if p >= 0.3 * p0 else 0.5),
                  final=lambda p: 0.0 if p >= 0.7 * p0 else 0.02)
    out = _search(checkpoint_step=0.85).apply(ModelState(digits_cnn), _ctx(digits_cnn, digits_data, judge))
    d = out.details
    final = _phases(d, "final")
    assert len(final) >= 2 and final[0]["verdict"] == "over budget"
    assert all(b["index"] < a["index"] for a, b in zip(final, final[1:]))  # each step back milder than the last
    if d.get("chosen"):
        assert d["chosen"]["phase"] == "final" and d["chosen"]["size_bytes"] >= 0.7 * p0
    else:
        assert "no pruned candidate kept the accuracy budget" in d["nothing_passed"]


def test_keeps_the_briefly_distilled_student_when_the_long_run_measures_worse(digits_cnn, digits_data):
    p0 = digits_cnn.count_params()
    judge = Judge(walk=lambda p: 0.0 if p >= 0.55 * p0 else 0.5, final=lambda p: 0.3)
    out = _search().apply(ModelState(digits_cnn), _ctx(digits_cnn, digits_data, judge))
    chosen = out.details["chosen"]
    assert chosen["phase"] == "walk" and "longer run measured worse" in chosen["note"]
    assert out.state.model.count_params() == chosen["size_bytes"]


def test_nothing_passes_leaves_the_model_and_says_so(digits_cnn, digits_data):
    judge = Judge(walk=lambda p: 0.5)
    state = ModelState(digits_cnn)
    out = _search().apply(state, _ctx(digits_cnn, digits_data, judge))
    assert out.state is state and len(_phases(out.details, "walk")) == 1
    assert out.details["nothing_passed"].startswith("no pruned candidate kept the accuracy budget")


def test_a_latency_budget_stops_the_walk_where_it_is_met(digits_cnn, digits_data):
    p0 = digits_cnn.count_params()
    judge = Judge(walk=lambda p: 0.0)
    out = _search().apply(ModelState(digits_cnn), _ctx(digits_cnn, digits_data, judge, latency_ratio=0.6))
    d = out.details
    assert d["cost_budget"] == pytest.approx(0.6 * p0 / 1000) and "reached the ms budget" in d["walk_end"]
    walk = _phases(d, "walk")
    assert walk[-1]["latency_ms"] <= 0.6 * p0 / 1000 < walk[-2]["latency_ms"]  # the mildest that meets it
    assert d["chosen"]["index"] == walk[-1]["index"] and not _phases(d, "refine")  # a met budget is not refined


def test_time_budget_stops_the_search(digits_cnn, digits_data):
    judge = Judge(walk=lambda p: 0.0)
    state = ModelState(digits_cnn)
    out = _search().apply(state, _ctx(digits_cnn, digits_data, judge, max_search_seconds=0.001))
    assert out.details["candidates"] == [] and out.state is state and out.details["stopped_by_time_budget"]
    assert "time budget (max_search_seconds=0) ran out before a candidate was tried" in out.details["nothing_passed"]


def test_size_objective_counts_bytes_at_the_precision(digits_cnn, digits_data):
    from kerascompress.quant.plan import PrecisionPlan

    judge = Judge(walk=lambda p: 0.0 if p >= 0.5 * digits_cnn.count_params() else 0.5)
    state = ModelState(digits_cnn, PrecisionPlan("int8"))
    out = _search().apply(state, _ctx(digits_cnn, digits_data, judge, objective="size"))
    cm = out.details["cost_model"]
    assert cm["unit"] == "bytes" and cm["base"] == pytest.approx(digits_cnn.count_params() * 1.0, rel=0.01)
    assert out.state.precision.mode == "int8"


def test_with_time_left_it_bisects_forward_from_the_winner(digits_cnn, digits_data):
    p0 = digits_cnn.count_params()
    judge = Judge(walk=lambda p: 0.0 if p >= 0.37 * p0 else 0.5)
    out = _search(checkpoint_step=0.6).apply(ModelState(digits_cnn), _ctx(digits_cnn, digits_data, judge))
    d = out.details
    walk, final, refine = _phases(d, "walk"), _phases(d, "final"), _phases(d, "refine")
    assert walk[-1]["index"] - walk[-2]["index"] > 1 and final[0]["verdict"] == "within budget"
    assert refine and all(walk[-2]["index"] < c["index"] < walk[-1]["index"] for c in refine)
    assert all((c["verdict"] == "within budget") == (c["size_bytes"] >= 0.37 * p0) for c in refine)
    passed = [c for c in final + refine if c["verdict"] == "within budget"]
    assert d["chosen"]["index"] == max(c["index"] for c in passed)  # the cheapest that passed
    assert out.state.model.count_params() == d["chosen"]["size_bytes"]


def _stream_ctx(model, digits_data, data):
    from kerascompress.data.bundle import make_bundle

    x, y, _, _ = digits_data
    ctx = _ctx(model, digits_data, Judge(walk=lambda p: 0.0))
    ctx.data = make_bundle(data, validation_data=(x[600:700], y[600:700]), calibration_samples=64, head_samples=128)
    return ctx


def test_a_stream_is_trained_on_whole_after_its_monitor_part(digits_cnn, digits_data):
    """The search reads the whole stream (not just the head held as arrays), in successive windows."""
    import tensorflow as tf

    x, y, _, _ = digits_data
    read: list[int] = []

    def examples():
        for i in range(600):
            read.append(i)
            yield x[i], y[i]

    spec = (tf.TensorSpec((8, 8, 1), tf.float32), tf.TensorSpec((), tf.int64))
    ds = tf.data.Dataset.from_generator(examples, output_signature=spec).batch(32)
    ctx = _stream_ctx(digits_cnn, digits_data, ds)
    assert ctx.data.train_stream is not None and len(ctx.data.x_train) == 128
    read.clear()
    out = _search(walk_epochs=0.25).apply(ModelState(digits_cnn), ctx)
    td = out.details["training_data"]
    assert td == {"stream": True, "examples": 600 - 64, "monitor_examples": 64}  # 2 batches of 32 held out
    assert set(read) == set(range(600)) and not out.details["data_notes"]
    walk = _phases(out.details, "walk")
    assert len(walk) >= 2  # several brief distillations, each on the next quarter of the stream


def test_an_endless_stream_leaves_the_search_its_head_and_the_report_says_so(digits_cnn, digits_data):
    import tensorflow as tf

    x, y, _, _ = digits_data
    ctx = _stream_ctx(digits_cnn, digits_data, tf.data.Dataset.from_tensor_slices((x[:600], y[:600])).batch(32).repeat())
    out = _search().apply(ModelState(digits_cnn), ctx)
    assert out.details["training_data"] == {"stream": False, "examples": 128 - 12, "monitor_examples": 12}
    (note,) = out.details["data_notes"]
    assert "never ends" in note and "first 128 examples" in note
