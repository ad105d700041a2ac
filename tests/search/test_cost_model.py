"""Cost models: a latency fit that recovers known coefficients, injected timings, NNLS, JSON round trip."""
import json

import keras
import numpy as np
import pytest
from keras import layers

from kerascompress.errors import ConfigError
from kerascompress.graph.channel_groups import find_channel_groups
from kerascompress.graph.model_graph import ModelGraph
from kerascompress.search.cost_model import (
    CostModel,
    counted_model,
    estimate_from_macs,
    measured_model,
    model_signature,
    nonnegative_least_squares,
    sample_configurations,
)
from kerascompress.search.features import CostFeatures
from kerascompress.search.widths import width_steps


def _setup():
    inp = keras.Input((8, 8, 3))
    h = layers.Conv2D(32, 3, padding="same", name="c1")(inp)
    h = layers.ReLU()(h)
    h = layers.Conv2D(64, 3, padding="same", name="c2")(h)
    h = layers.GlobalAveragePooling2D()(h)
    model = keras.Model(inp, layers.Dense(10, name="head")(h), name="cnn")
    graph = ModelGraph.from_keras(model)
    groups = find_channel_groups(graph)
    steps = {g.id: width_steps(g.size, 16, 8, 0.875) for g in groups.prunable}
    scores = {g.id: np.arange(g.size, dtype=float) for g in groups.prunable}
    return model, graph, groups, steps, scores


def test_nnls_keeps_coefficients_non_negative():
    a = np.array([[1.0, 0.0], [1.0, 1.0], [1.0, 2.0]])
    assert nonnegative_least_squares(a, np.array([1.0, 3.0, 5.0])) == pytest.approx([1.0, 2.0])
    x = nonnegative_least_squares(a, np.array([5.0, 3.0, 1.0]))  # falling cost: the slope is clamped at 0
    assert (x >= 0).all() and x[1] == 0.0


def test_fit_recovers_an_injected_latency_law_with_drift_between_chunks():
    model, graph, groups, steps, scores = _setup()
    features = CostFeatures(graph, groups)
    calls = {"n": 0}

    def build(m):
        return m  # the "artifact" is the model itself

    def time(artifacts):  # injected law: 0.05 ms + 2e-6 ms per conv MAC; the second chunk runs 2x slower
        calls["n"] += 1
        drift = 2.0 if calls["n"] == 2 else 1.0
        out = {}
        for k, m in artifacts.items():
            from kerascompress.graph.counting import count_model

            conv = sum(n.macs for n in count_model(m).nodes.values() if n.class_name == "Conv2D")
            out[k] = drift * (0.05 + 2e-6 * conv)
        return out

    cm = measured_model(graph, groups, features, scores, steps, build, time, model_signature(model, groups),
                        "injected", n_random=8, chunk=2)
    assert calls["n"] >= 3 and cm.unit == "ms"  # the full model's median over chunks is the undrifted one and cm.terms[0] == "const"
    coef = dict(zip(cm.terms, cm.coef))
    assert coef["const"] == pytest.approx(0.05, rel=0.02) and coef["macs:conv"] == pytest.approx(2e-6, rel=0.02)
    assert cm.fit_error < 0.02
    half = {g: ws[len(ws) // 2] for g, ws in steps.items()}
    assert cm.predict(features, half) == pytest.approx(0.05 + 2e-6 * features.macs_by_kind(half)["conv"], rel=0.02)


def test_sample_configurations_are_unique_and_start_with_the_full_model():
    configs = sample_configurations({1: [32, 16], 2: [64, 48, 32, 16]}, n_random=20, seed=0)
    assert configs[0] == {} and len({tuple(sorted(c.items())) for c in configs}) == len(configs)
    assert all(set(c) <= {1, 2} for c in configs)


def test_counted_models_and_the_estimate_label():
    model, graph, groups, steps, scores = _setup()
    f = CostFeatures(graph, groups)
    sig = model_signature(model, groups)
    assert counted_model(f, sig, "bytes", 1.0).predict(f, {}) == pytest.approx(model.count_params())
    macs = estimate_from_macs(counted_model(f, sig, "macs"))
    assert macs.is_estimate and macs.predict(f, {}) == pytest.approx(f.total_macs({}))
    with pytest.raises(ConfigError, match="macs or bytes"):
        counted_model(f, sig, "ms")


def test_json_round_trip_and_signature_check(tmp_path):
    model, graph, groups, steps, scores = _setup()
    sig = model_signature(model, groups)
    m = CostModel(sig, "ms", ["const", "macs:conv"], [0.1, 1e-6], "measured on the device", "arm64-fp16", "int8",
                  [{"widths": {}, "cost": 0.3}], 0.04)
    path = m.save(tmp_path / "table.json")
    back = CostModel.load(path)
    assert back == m
    back.check_matches(sig)
    with pytest.raises(ConfigError, match="different model"):
        back.check_matches("0" * 64)
    bad = json.loads(path.read_text())
    bad["format"] = 1
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(ConfigError, match="format"):
        CostModel.load(tmp_path / "bad.json")
    with pytest.raises(ConfigError, match="does not exist"):
        CostModel.load(tmp_path / "missing.json")
