"""Importance criteria: scores per group channel, computed over the whole group."""
from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import layers as L

from kerascompress.errors import ConfigError, DataError
from kerascompress.graph.channel_groups import find_channel_groups
from kerascompress.graph.model_graph import ModelGraph
from kerascompress.passes.importance import channel_importance


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
    with pytest.raises(ConfigError):
        channel_importance(graph, groups, "random")
