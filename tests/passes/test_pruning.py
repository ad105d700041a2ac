"""The `ChannelPruning` pass: gating, how much it removes, rounding, targets and its report."""
from __future__ import annotations

import numpy as np
import pytest

from kerascompress.data.bundle import make_bundle
from kerascompress.errors import ConfigError, DataError
from kerascompress.examples import zoo
from kerascompress.passes.base import ModelState, PassContext
from kerascompress.passes.pruning import ChannelPruning, round_width
from kerascompress.targets.target import Target
from tests.helpers.exactness import randomize

CPU8 = Target("cpu8", channel_multiple=8)


def _ctx(target=CPU8, data=None, teacher=None):
    return PassContext(target=target, data=data, teacher=teacher, progress=lambda _m: None)


@pytest.fixture(scope="module")
def model():
    return randomize(zoo.residual_cnn(width=16), seed=3)


def _widths(m):
    return {l.name: (l.filters if hasattr(l, "filters") else l.units) for l in m.layers if hasattr(l, "filters") or hasattr(l, "units")}


def test_round_width():
    assert round_width(64, 30.2, 8, 4) == 32
    assert round_width(64, 0.0, 8, 4) == 8
    assert round_width(10, 9.0, 8, 1) == 10  # never wider than the original
    assert round_width(6, 1.0, 1, 4) == 4  # min channels kept
    assert round_width(3, 1.0, 1, 4) == 3


def test_gate_allows_every_target():
    p = ChannelPruning(0.5)
    for t in (Target("x"), Target("mcu", device="mcu", full_integer_only=True), Target("trt", runtime="tensorrt", device="gpu")):
        gate = p.gate(t, ModelState(None))
        assert gate.allowed and gate.benefit == "size+latency"
    assert not ChannelPruning(0.5).needs_data
    assert ChannelPruning(0.5, criterion="taylor").needs_data
    assert ChannelPruning(0.5, finetune_epochs=1).needs_data
    with pytest.raises(ConfigError):
        ChannelPruning(1.5)
    with pytest.raises(ConfigError):
        ChannelPruning(criterion="nope")


def test_uniform_ratio_rounds_to_target_multiple(model):
    before = [w.copy() for w in model.get_weights()]
    out = ChannelPruning(0.4).apply(ModelState(model), _ctx())
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))  # caller untouched
    old, new = _widths(model), _widths(out.state.model)
    for name, w in new.items():
        assert w <= old[name]
        assert w % 8 == 0 or w == old[name]
    d = out.details
    assert d["macs_after"] < d["macs_before"] and d["params_after"] < d["params_before"]
    assert {g["kept"] for g in d["groups"]} == {16, 24, 40}  # 16*.6=9.6->16, 32*.6=19.2->24, 64*.6=38.4->40
    assert d["frozen_groups"] and all(g["reasons"] for g in d["frozen_groups"])
    assert new["predictions"] == 10  # outputs are never pruned


def test_global_ranking_and_layer_ratios(model):
    glob = ChannelPruning(0.5, global_ranking=True, channel_multiple=1, min_channels=1).apply(ModelState(model), _ctx())
    removed = sum(g["removed"] for g in glob.details["groups"])
    total = sum(g["channels"] for g in glob.details["groups"])
    assert abs(removed / total - 0.5) < 0.05
    per = ChannelPruning(layer_ratios={"s1b0_conv1": 0.5}).apply(ModelState(model), _ctx())
    changed = [g for g in per.details["groups"] if g["removed"]]
    assert len(changed) == 1 and changed[0]["producers"] == ["s1b0_conv1"] and changed[0]["kept"] == 16
    with pytest.raises(ConfigError):
        ChannelPruning(layer_ratios={"nope": 0.5}).apply(ModelState(model), _ctx())


@pytest.mark.parametrize("kind", ["macs_target", "params_target"])
def test_targets_are_met(model, kind):
    out = ChannelPruning(**{kind: 0.5}, channel_multiple=1, min_channels=1).apply(ModelState(model), _ctx())
    d = out.details
    key = kind.split("_")[0]
    assert d[f"{key}_after"] <= 0.5 * d[f"{key}_before"]
    assert d[f"{key}_after"] > 0.3 * d[f"{key}_before"]  # not far past the goal


def test_data_needed_for_taylor_and_finetune(model):
    with pytest.raises(DataError):
        ChannelPruning(0.3, criterion="taylor").apply(ModelState(model), _ctx())
    small = randomize(zoo.residual_cnn(input_shape=(12, 12, 1), width=8), seed=1)
    rng = np.random.default_rng(0)
    data = make_bundle((rng.random((64, 12, 12, 1), dtype=np.float32), rng.integers(0, 10, 64)), calibration_samples=16)
    out = ChannelPruning(0.5, criterion="taylor", finetune_epochs=1, min_channels=1,
                         finetune_options={"batch_size": 32}).apply(ModelState(small), _ctx(data=data, teacher=small))
    assert out.details["finetune_epochs"] == 1
    assert out.state.model.count_params() < small.count_params()


def test_a_registered_criterion_chooses_the_channels_and_gets_data_when_it_asks(model):
    from kerascompress.passes import importance

    saved = dict(importance._REGISTRY)
    try:
        _registered_criterion_in_use(model, importance)
    finally:
        importance._REGISTRY.clear()
        importance._REGISTRY.update(saved)


def _registered_criterion_in_use(model, importance):
    received = []

    def later_channels_matter_more(graph, groups, model, x, y):
        """Scores rise with the channel index, so the first channels of every group go."""
        received.append(None if x is None else len(x))
        return {g.id: np.arange(g.size, dtype=float) for g in groups.prunable}

    importance.register_importance("index", later_channels_matter_more)
    importance.register_importance("index_with_data", later_channels_matter_more, needs_data=True)
    with pytest.raises(ConfigError, match="choose one of l1, l2, bn_gamma, taylor, index, index_with_data"):
        ChannelPruning(0.5, criterion="nope")
    out = ChannelPruning(0.5, criterion="index", min_channels=1).apply(ModelState(model), _ctx())
    assert out.details["criterion"] == "index" and received == [None]
    stem = next(layer for layer in model.layers if type(layer).__name__ == "Conv2D")  # reads the image: inputs intact
    kernel = stem.get_weights()[0]
    kept = out.state.model.get_layer(stem.name).get_weights()[0]
    assert kept.shape[-1] < kernel.shape[-1]
    np.testing.assert_array_equal(kept, kernel[..., kernel.shape[-1] - kept.shape[-1]:])  # the last channels stayed
    assert all(g["kept"] == g["channels"] - g["removed"] for g in out.details["groups"])
    p = ChannelPruning(0.5, criterion="index_with_data", min_channels=1)
    assert p.needs_data and not ChannelPruning(0.5, criterion="index").needs_data
    with pytest.raises(DataError):
        p.apply(ModelState(model), _ctx())
    rng = np.random.default_rng(0)
    data = make_bundle((rng.random((64,) + model.input_shape[1:], dtype=np.float32), rng.integers(0, 10, 64)),
                       calibration_samples=16)
    p.apply(ModelState(model), _ctx(data=data))
    assert received[-1] == 16
