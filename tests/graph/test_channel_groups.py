"""Channel dependency groups: which channels go together, and which are frozen and why."""
from __future__ import annotations

import keras
from keras import layers as L

from kerascompress.graph.channel_groups import find_channel_groups
from kerascompress.graph.layer_rules import register_layer_rule
from kerascompress.graph.model_graph import ModelGraph


def groups_of(model):
    return find_channel_groups(ModelGraph.from_keras(model))


def by_producer(groups):
    return {p: g for g in groups.groups for p in g.producers}


def test_residual_add_couples_producers_and_outputs_are_frozen():
    x = keras.Input((8, 8, 3))
    a = L.Conv2D(8, 3, padding="same", name="a")(x)
    b = L.Conv2D(8, 3, padding="same", name="b")(L.ReLU()(a))
    s = L.Add(name="add")([a, b])
    c = L.Conv2D(4, 1, name="c")(s)
    out = L.Dense(2, name="head")(L.GlobalAveragePooling2D()(c))
    groups = groups_of(keras.Model(x, out))
    g = by_producer(groups)
    assert g["a"] is g["b"] and g["a"].size == 8 and g["a"].prunable
    assert "c" in g["a"].consumers and "b" in g["a"].consumers
    assert not g["head"].prunable and "model output" in g["head"].frozen[0]
    assert any("model input" in r for frozen in groups.frozen for r in frozen.frozen)


def test_concat_keeps_offsets_and_flatten_repeats_per_position():
    x = keras.Input((4, 4, 2))
    a = L.Conv2D(3, 1, name="a")(x)
    b = L.Conv2D(5, 1, name="b")(x)
    cat = L.Concatenate(name="cat")([a, b])
    flat = L.Flatten(name="flat")(L.MaxPooling2D(name="pool")(cat))
    out = L.Dense(2)(flat)
    groups = groups_of(keras.Model(x, out))
    g = by_producer(groups)
    assert g["a"] is not g["b"]
    gid, idx = groups.group_indices(groups.maps[("cat", 0)])
    assert list(gid) == [g["a"].id] * 3 + [g["b"].id] * 5
    assert list(idx) == [0, 1, 2, 0, 1, 2, 3, 4]
    fid, fidx = groups.group_indices(groups.maps[("flat", 0)])
    assert len(fid) == 2 * 2 * 8 and list(fidx[8:16]) == list(idx)  # position 1 repeats the channels


def test_depthwise_multiplier_and_grouped_conv_coupling():
    x = keras.Input((6, 6, 3))
    a = L.Conv2D(4, 1, name="a")(x)
    d = L.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="dw")(a)
    gc = L.Conv2D(6, 1, groups=2, name="gc")(d)
    out = L.Dense(2)(L.GlobalAveragePooling2D()(gc))
    groups = groups_of(keras.Model(x, out))
    g = by_producer(groups)
    _, idx = groups.group_indices(groups.maps[("dw", 0)])
    # depthwise output c*2+k comes from input c; the grouped conv ties channel k of both groups
    assert g["a"].size == 2
    assert list(idx) == [0, 0, 1, 1, 0, 0, 1, 1]
    assert g["gc"].size == 3 and list(groups.group_indices(groups.maps[("gc", 0)])[1]) == [0, 1, 2, 0, 1, 2]


def test_broadcast_gate_is_coupled_but_channel_scalar_is_not():
    x = keras.Input((6, 6, 3))
    y = L.Conv2D(8, 3, name="y")(x)
    gate = L.Conv2D(8, 1, activation="sigmoid", name="gate")(L.GlobalAveragePooling2D(keepdims=True)(y))
    scalar = L.Conv2D(1, 1, activation="sigmoid", name="scalar")(y)
    z = L.Multiply()([L.Multiply()([y, gate]), scalar])
    out = L.Dense(2)(L.GlobalAveragePooling2D()(z))
    g = by_producer(groups_of(keras.Model(x, out)))
    assert g["y"] is g["gate"]
    assert g["scalar"] is not g["y"] and g["scalar"].size == 1


def test_softmax_layernorm_and_unknown_layers_freeze_with_reasons():
    x = keras.Input((6, 6, 3))
    a = L.Conv2D(8, 1, name="a")(x)
    b = L.Conv2D(8, 1, name="b")(x)
    c = L.Conv2D(8, 1, name="c")(x)
    y = L.Concatenate()([L.Softmax()(a), L.LayerNormalization()(b), L.GroupNormalization(groups=2)(c)])
    out = L.Dense(2)(L.GlobalAveragePooling2D()(y))
    g = by_producer(groups_of(keras.Model(x, out)))
    assert "softmax" in g["a"].frozen[0]
    assert "LayerNormalization" in g["b"].frozen[0]
    assert "unknown layer class 'GroupNormalization'" in g["c"].frozen[0]


def test_layernorm_over_other_axis_and_bn_pass():
    x = keras.Input((5, 3))
    a = L.Dense(8, name="a")(x)
    a = L.LayerNormalization(axis=1)(a)
    a = L.BatchNormalization()(a)
    out = L.Dense(2)(L.GlobalAveragePooling1D()(a))
    assert by_producer(groups_of(keras.Model(x, out)))["a"].prunable


def test_reshape_moving_channels_freezes():
    x = keras.Input((4,))
    a = L.Dense(8, name="a")(x)
    r = L.Reshape((2, 4))(a)  # channels split across two axes
    out = L.Dense(2)(L.Flatten()(r))
    g = by_producer(groups_of(keras.Model(x, out)))
    assert not g["a"].prunable and "moves channels" in g["a"].frozen[0]


def test_keras_ops_elementwise_and_unknown():
    x = keras.Input((6, 6, 3))
    a = L.Conv2D(8, 1, name="a")(x)
    b = L.Conv2D(8, 1, name="b")(x)
    s = keras.ops.add(a, b)
    t = keras.ops.flip(L.Conv2D(8, 1, name="c")(x), axis=-1)
    out = L.Dense(2)(L.GlobalAveragePooling2D()(L.Concatenate()([s, t])))
    g = by_producer(groups_of(keras.Model(x, out)))
    assert g["a"] is g["b"] and g["a"].prunable
    assert not g["c"].prunable


@keras.saving.register_keras_serializable(package="kc_tests")
class Twice(L.Layer):
    def call(self, x):
        return x * 2.0


def test_a_failing_rule_freezes_instead_of_crashing():
    from kerascompress.graph.layer_rules import LayerRule

    class Broken(LayerRule):
        def propagate(self, node, in_maps, table):
            raise IndexError("boom")

    register_layer_rule("Twice", Broken())
    x = keras.Input((6, 6, 3))
    y = Twice(name="twice")(L.Conv2D(8, 3, name="y")(x))
    out = L.Dense(2)(L.GlobalAveragePooling2D()(y))
    g = by_producer(groups_of(keras.Model(x, out)))
    assert not g["y"].prunable and "rule failed (IndexError: boom)" in g["y"].frozen[0]
