"""Cost tables: additive prediction, exact counted bytes, measured latency with injected timings, JSON round trip."""
import json

import keras
import numpy as np
import pytest
from keras import layers

from kerascompress.errors import ConfigError
from kerascompress.graph.channel_groups import find_channel_groups
from kerascompress.graph.model_graph import ModelGraph
from kerascompress.search.cost_table import (
    CostTable,
    counted_table,
    estimate_from_macs,
    measured_table,
    model_signature,
    sample_widths,
)
from kerascompress.search.widths import pruned_model, width_steps


def _cnn():
    inp = keras.Input((8, 8, 3))
    h = layers.Conv2D(32, 3, padding="same", name="c1")(inp)
    h = layers.ReLU()(h)
    h = layers.Conv2D(64, 3, padding="same", name="c2")(h)
    h = layers.GlobalAveragePooling2D()(h)
    return keras.Model(inp, layers.Dense(10, name="head")(h), name="cnn")


def _setup():
    model = _cnn()
    graph = ModelGraph.from_keras(model)
    groups = find_channel_groups(graph)
    steps = {g.id: width_steps(g.size, 16, 8, 0.875) for g in groups.prunable}
    scores = {g.id: np.arange(g.size, dtype=float) for g in groups.prunable}
    return model, graph, groups, steps, scores


def test_prediction_is_additive_and_interpolated():
    t = CostTable("sig", "ms", 10.0, {1: ([32, 16], [10.0, 6.0]), 2: ([64, 32], [10.0, 7.0])}, "test")
    assert t.group_cost(1, 24) == pytest.approx(8.0)  # halfway between 16 and 32
    assert t.predict({1: 16, 2: 32}) == pytest.approx(10.0 - 4.0 - 3.0)
    assert t.predict({}) == 10.0 and t.group_cost(99, 3) == 10.0


def test_counted_bytes_match_the_pruned_models_exactly():
    model, graph, groups, steps, scores = _setup()
    table = counted_table(graph, groups, steps, model_signature(model, groups), unit="bytes", bytes_per_param=1.0)
    assert table.base == pytest.approx(model.count_params())
    for gid, ws in steps.items():
        for w, cost in zip(*table.curves[gid]):
            pruned = pruned_model(graph, groups, scores, {gid: w}, "p")
            assert cost == pytest.approx(pruned.count_params()), (gid, w)
    macs = estimate_from_macs(counted_table(graph, groups, steps, "sig", unit="macs"))
    assert macs.is_estimate and "not measured" in macs.notes[0]


def test_measured_table_with_injected_timings_is_relative_to_each_chunk():
    model, graph, groups, steps, scores = _setup()
    seen = []
    calls = {"n": 0}

    def build(m):
        return int(m.count_params())  # the fake "artifact" is the parameter count

    def time(artifacts):
        calls["n"] += 1
        drift = 2.0 if calls["n"] == 2 else 1.0  # the second chunk runs on a 2x slower machine
        return {k: drift * v / 1000.0 for k, v in artifacts.items()}

    table = measured_table(graph, groups, scores, steps, build, time, "sig", "injected", max_points=6, chunk=1,
                           on_model=lambda g, w, m: seen.append((g, w)))
    assert calls["n"] >= 2 and table.unit == "ms"
    base = model.count_params() / 1000.0
    assert table.base == pytest.approx(base)  # median of four chunks timed at 1x, 2x, 1x, 1x
    for gid, ws in steps.items():
        for w, cost in zip(*table.curves[gid]):
            expected = pruned_model(graph, groups, scores, {gid: w}, "p").count_params() / 1000.0
            assert cost == pytest.approx(expected / base * table.base)  # drift cancels within each chunk
    assert sorted(seen) == sorted((g, w) for g, ws in steps.items() for w in sample_widths(ws, 6)[1:])


def test_json_round_trip_and_signature_check(tmp_path):
    model, graph, groups, steps, scores = _setup()
    sig = model_signature(model, groups)
    t = CostTable(sig, "ms", 1.5, {1: ([32, 16], [1.5, 1.0])}, "measured on the device", "arm64-fp16", "int8")
    path = t.save(tmp_path / "table.json")
    back = CostTable.load(path)
    assert back == t
    back.check_matches(sig)
    with pytest.raises(ConfigError, match="different model"):
        back.check_matches(model_signature(_cnn().__class__(model.inputs, model.outputs), groups) + "x")
    bad = json.loads(path.read_text())
    bad["format"] = 99
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(ConfigError, match="format"):
        CostTable.load(tmp_path / "bad.json")
    with pytest.raises(ConfigError, match="does not exist"):
        CostTable.load(tmp_path / "missing.json")
