"""Per-layer channel rules: how channels flow through a layer, how it is sliced, and registering new ones."""
from __future__ import annotations

import keras
import numpy as np
from keras import layers as L

from kerascompress.graph.channel_groups import find_channel_groups
from kerascompress.graph.layer_rules import ChannelwiseRule, register_layer_rule
from kerascompress.graph.model_graph import ModelGraph
from tests.helpers.exactness import check_exact


def groups_of(model):
    return find_channel_groups(ModelGraph.from_keras(model))


def by_producer(groups):
    return {p: g for g in groups.groups for p in g.producers}


def test_registered_rule_makes_custom_layer_prunable():
    def build():
        x = keras.Input((6, 6, 3))
        y = L.Conv2D(8, 3, name="y")(x)
        y = PerChannelScale(name="scale")(y)
        out = L.Dense(2)(L.GlobalAveragePooling2D()(L.Conv2D(4, 1)(y)))
        return keras.Model(x, out)

    assert not by_producer(groups_of(build()))["y"].prunable
    register_layer_rule(PerChannelScale, ChannelwiseRule())
    model = build()
    model.get_layer("scale").set_weights([np.arange(1, 9, dtype="float32")])
    groups = groups_of(model)
    assert by_producer(groups)["y"].prunable

    _, _, keep, pruned = check_exact(model, seed=2)
    assert pruned.get_layer("scale").get_weights()[0].shape[0] == pruned.get_layer("y").filters


@keras.saving.register_keras_serializable(package="kc_tests")
class PerChannelScale(L.Layer):
    def build(self, shape):
        self.scale = self.add_weight(shape=(shape[-1],), initializer="ones", name="scale")

    def call(self, x):
        return x * self.scale
