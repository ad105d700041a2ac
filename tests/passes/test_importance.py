"""Importance criteria: scores per group channel, computed over the whole group."""
from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import layers as L

from kerascompress.errors import ConfigError, DataError
from kerascompress.graph.channel_groups import find_channel_groups
from kerascompress.graph.model_graph import ModelGraph
from kerascompress.passes import importance
from kerascompress.passes.importance import channel_importance, register_importance


def _model():
    x = keras.Input((6, 6, 2))
    a = L.Conv2D(4, 3, padding="same", use_bias=False, name="a")(x)
    a = L.BatchNormalization(name="bn")(a)
    b = L.Conv2D(4, 1, use_bias=False, name="b")(a)
    s = L.Add()([a, b])
    out = L.Dense(3, activation="softmax", name="head")(L.GlobalAveragePooling2D()(L.Conv2D(5, 1, name="c")(s)))
    model = keras.Model(x, out)
    # channel i of "a" and of "b" has magnitude i+1, so both members agree on the order
    ka = np.ones((3, 3, 2, 4), "float32") * np.arange(1, 5, dtype="float32")
    kb = np.ones((1, 1, 4, 4), "float32") * np.arange(1, 5, dtype="float32")
    model.get_layer("a").set_weights([ka])
    model.get_layer("b").set_weights([kb])
    model.get_layer("bn").set_weights([np.array([4, 3, 2, 1], "float32"), np.zeros(4, "float32"),
                                      np.zeros(4, "float32"), np.ones(4, "float32")])
    return model


def _setup():
    model = _model()
    graph = ModelGraph.from_keras(model)
    groups = find_channel_groups(graph)
    gid = next(g.id for g in groups.groups if "a" in g.producers)
    return model, graph, groups, gid


@pytest.mark.parametrize("criterion", ["l1", "l2"])
def test_weight_norms_rank_by_magnitude_over_the_group(criterion):
    _, graph, groups, gid = _setup()
    scores = channel_importance(graph, groups, criterion)
    assert set(scores) == {g.id for g in groups.prunable}
    assert list(np.argsort(scores[gid])) == [0, 1, 2, 3]
    assert np.isclose(scores[gid].mean(), 1.0)  # mean-normalised: comparable across groups


def test_bn_gamma_uses_gamma():
    _, graph, groups, gid = _setup()
    scores = channel_importance(graph, groups, "bn_gamma")
    assert list(np.argsort(scores[gid])) == [3, 2, 1, 0]


def test_taylor_needs_data_and_scores_dead_channels_lowest():
    model, graph, groups, gid = _setup()
    with pytest.raises(DataError):
        channel_importance(graph, groups, "taylor", model=model, x=np.zeros((0, 6, 6, 2), "float32"))
    # channel 2 of the group has all-zero filters and a zero BN shift: it cannot matter
    ka = model.get_layer("a").get_weights()[0]
    kb = model.get_layer("b").get_weights()[0]
    ka[..., 2] = 0
    kb[..., 2] = 0
    model.get_layer("a").set_weights([ka])
    model.get_layer("b").set_weights([kb])
    graph = ModelGraph.from_keras(model)
    groups = find_channel_groups(graph)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 6, 6, 2)).astype("float32")
    y = rng.integers(0, 3, 16)
    scores = channel_importance(graph, groups, "taylor", model=model, x=x, y=y, batches=2)
    assert np.argmin(scores[gid]) == 2
    unlabeled = channel_importance(graph, groups, "taylor", model=model, x=x, batches=1)
    assert np.argmin(unlabeled[gid]) == 2


def test_unknown_criterion():
    _, graph, groups, _ = _setup()
    with pytest.raises(ConfigError, match="unknown importance criterion 'random'; choose one of l1, l2, bn_gamma, taylor"):
        channel_importance(graph, groups, "random")


@pytest.fixture
def registry(monkeypatch):
    """The criteria registry, restored after the test."""
    saved = dict(importance._REGISTRY)
    yield importance._REGISTRY
    importance._REGISTRY.clear()
    importance._REGISTRY.update(saved)


def test_a_registered_criterion_scores_like_a_built_in(registry):
    _, graph, groups, gid = _setup()
    seen = {}

    def reverse_l1(graph, groups, model, x, y):
        seen.update(model=model, x=x, y=y)
        return {g: -s for g, s in importance.weight_importance(graph, groups, "l1").items()}

    register_importance("reverse_l1", reverse_l1)
    assert "reverse_l1" in importance.CRITERIA and not importance.criterion_needs_data("reverse_l1")
    scores = channel_importance(graph, groups, "reverse_l1", model="the model")
    assert np.argsort(scores[gid]).tolist() == [3, 2, 1, 0]  # the largest kernels now go first
    assert seen == {"model": "the model", "x": None, "y": None}
    with pytest.raises(ConfigError, match="choose one of l1, l2, bn_gamma, taylor, reverse_l1"):
        channel_importance(graph, groups, "random")


def test_scores_that_cannot_rank_the_channels_are_refused(registry):
    _, graph, groups, gid = _setup()
    register_importance("short", lambda graph, groups, model, x, y: {gid: [1.0, 2.0]})
    register_importance("stranger", lambda graph, groups, model, x, y: {10_000: [1.0]})
    register_importance("nan", lambda graph, groups, model, x, y: {gid: [1.0, np.nan, 2.0, 3.0]})
    with pytest.raises(ConfigError, match=r"shape \(2,\); it needs 4 finite values"):
        channel_importance(graph, groups, "short")
    with pytest.raises(ConfigError, match="not a prunable group"):
        channel_importance(graph, groups, "stranger")
    with pytest.raises(ConfigError, match="finite"):
        channel_importance(graph, groups, "nan")


def test_built_in_names_cannot_be_taken_and_names_must_be_names(registry):
    with pytest.raises(ConfigError, match="built-in"):
        register_importance("l1", lambda *a: {})
    with pytest.raises(ConfigError, match="non-empty name"):
        register_importance("", lambda *a: {})
    with pytest.raises(ConfigError, match="expected a function"):
        register_importance("x", 42)
    assert importance.criterion_needs_data("taylor") and not importance.criterion_needs_data("l2")
