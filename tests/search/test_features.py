"""Cost features: MACs per layer kind and weights of any configuration, checked against rebuilt models."""
import keras
import numpy as np
import pytest
from keras import layers

from kerascompress.graph.channel_groups import find_channel_groups
from kerascompress.graph.counting import count_model
from kerascompress.graph.model_graph import ModelGraph
from kerascompress.search.features import CostFeatures
from kerascompress.search.widths import pruned_model


def _net():
    inp = keras.Input((8, 8, 3))
    h = layers.Conv2D(32, 3, padding="same", use_bias=False, name="c1")(inp)
    h = layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw")(h)
    h = layers.Conv2D(64, 1, use_bias=False, name="pw")(h)
    h = layers.GlobalAveragePooling2D()(h)
    return keras.Model(inp, layers.Dense(10, use_bias=False, name="head")(h))


def test_macs_by_kind_match_the_pruned_models():
    model = _net()
    graph = ModelGraph.from_keras(model)
    groups = find_channel_groups(graph)
    f = CostFeatures(graph, groups)
    assert set(f.kinds) == {"conv", "depthwise", "dense"}
    scores = {g.id: np.arange(g.size, dtype=float) for g in groups.prunable}
    for widths in ({}, {g.id: g.size // 2 for g in groups.prunable}):
        pruned = pruned_model(graph, groups, scores, widths, "p")
        cost = count_model(pruned)
        assert f.total_macs(widths) == pytest.approx(cost.macs)
        assert f.total_params(widths) == pytest.approx(cost.params)  # no biases: exact
        by_kind = f.macs_by_kind(widths)
        dw = sum(n.macs for n in cost.nodes.values() if n.class_name == "DepthwiseConv2D")
        assert by_kind["depthwise"] == pytest.approx(dw)
        assert f.vector(widths, ["conv", "dense"])[0] == 1.0
