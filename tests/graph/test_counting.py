"""count_model: parameters and MACs against hand-computed values (arithmetic written out)."""
from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import layers as L

from kerascompress.graph import ModelGraph
from kerascompress.graph.counting import count_model


def one_layer(layer, shape, dtype="float32"):
    x = keras.Input(shape, dtype=dtype)
    m = keras.Model(x, layer(x))
    cost = count_model(m)
    assert cost.params == m.count_params()
    return cost.nodes[layer.name], cost


def test_conv2d_and_groups():
    c, _ = one_layer(L.Conv2D(8, 3, padding="same", name="c"), (10, 10, 4))
    assert c.params == 3 * 3 * 4 * 8 + 8
    assert c.macs == 10 * 10 * 8 * (3 * 3 * 4)
    g, _ = one_layer(L.Conv2D(8, 3, groups=2, name="g"), (10, 10, 4))  # valid -> 8x8
    assert g.params == 3 * 3 * 2 * 8 + 8
    assert g.macs == 8 * 8 * 8 * (3 * 3 * 2)
    s, _ = one_layer(L.Conv2D(6, 3, strides=2, padding="same", use_bias=False, name="s"), (9, 9, 3))
    assert s.macs == 5 * 5 * 6 * (3 * 3 * 3)


def test_conv1d_conv3d():
    c, _ = one_layer(L.Conv1D(5, 3, name="c1"), (20, 2))  # out length 18
    assert c.macs == 18 * 5 * (3 * 2)
    c, _ = one_layer(L.Conv3D(4, 2, name="c3"), (5, 5, 5, 3))  # out 4x4x4
    assert c.macs == 4 * 4 * 4 * 4 * (2 * 2 * 2 * 3)
    assert c.params == 2 * 2 * 2 * 3 * 4 + 4


def test_conv2d_transpose():
    c, _ = one_layer(L.Conv2DTranspose(6, 3, strides=2, padding="same", name="t"), (5, 5, 4))
    # every input element (5*5*4) is multiplied into a 3x3x6 patch
    assert c.macs == 5 * 5 * 4 * (3 * 3 * 6)
    assert c.params == 3 * 3 * 6 * 4 + 6


def test_depthwise_and_separable():
    d, _ = one_layer(L.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="dw"), (8, 8, 5))
    assert d.params == 3 * 3 * 5 * 2 + 5 * 2
    assert d.macs == 8 * 8 * (5 * 2) * (3 * 3)
    s, _ = one_layer(L.SeparableConv2D(7, 3, depth_multiplier=2, name="sep"), (8, 8, 5))  # out 6x6
    assert s.params == 3 * 3 * 5 * 2 + (5 * 2) * 7 + 7
    assert s.macs == 6 * 6 * (3 * 3 * 5 * 2) + 6 * 6 * (5 * 2 * 7)
    s1, _ = one_layer(L.SeparableConv1D(4, 3, name="sep1"), (10, 3))  # out length 8
    assert s1.macs == 8 * (3 * 3) + 8 * (3 * 4)


def test_dense_2d_and_3d():
    d, _ = one_layer(L.Dense(16, name="d"), (32,))
    assert (d.params, d.macs) == (32 * 16 + 16, 32 * 16)
    d, _ = one_layer(L.Dense(16, name="d3"), (7, 32))  # applied at each of 7 positions
    assert d.macs == 7 * 32 * 16


def test_einsum_dense():
    layer = L.EinsumDense("abc,cde->abde", output_shape=(None, 4, 5), bias_axes="de", name="e")
    e, _ = one_layer(layer, (6, 8))
    assert e.params == 8 * 4 * 5 + 4 * 5
    assert e.macs == 6 * 4 * 5 * 8  # output elements x contracted dim c


def test_norms_count_params_not_macs_and_trainable():
    x = keras.Input((4, 6))
    h = L.BatchNormalization(name="bn")(x)
    h = L.LayerNormalization(name="ln")(h)
    m = keras.Model(x, h)
    cost = count_model(m)
    assert cost.nodes["bn"].params == 4 * 6 and cost.nodes["bn"].trainable_params == 2 * 6
    assert cost.nodes["ln"].params == 2 * 6
    assert cost.macs == 0
    assert cost.params == m.count_params()
    assert cost.trainable_params == sum(int(np.size(w)) for w in m.trainable_weights) == 24


def test_multi_head_attention():
    q, v = keras.Input((6, 8)), keras.Input((4, 10))
    m = keras.Model([q, v], L.MultiHeadAttention(2, 3, name="mha")(q, v))
    c = count_model(m)
    assert c.params == m.count_params()
    proj = 6 * (8 * 2 * 3) + 4 * (10 * 2 * 3) + 4 * (10 * 2 * 3) + 6 * (2 * 3 * 8)
    attn = 2 * 6 * 4 * (3 + 3)
    assert c.nodes["mha"].macs == proj + attn


def test_unknown_layer_flagged_and_shared_layer_counted_once():
    @keras.saving.register_keras_serializable(package="kc_test_count")
    class Mystery(L.Layer):
        def build(self, shape):
            self.w = self.add_weight(shape=(shape[-1], 3))

        def call(self, x):
            return keras.ops.matmul(x, self.w)

    a, b = keras.Input((5,)), keras.Input((5,))
    shared = L.Dense(5, name="shared")
    h = L.Add(name="add")([shared(a), shared(b)])
    m = keras.Model([a, b], Mystery(name="myst")(h))
    c = count_model(m)
    assert c.unknown == ["myst"]
    assert (c.nodes["myst"].params, c.nodes["myst"].macs, c.nodes["myst"].known) == (15, 0, False)
    assert c.nodes["shared@0"].params == 30 and c.nodes["shared@1"].params == 0
    assert c.nodes["shared@0"].macs == c.nodes["shared@1"].macs == 25
    assert c.params == m.count_params() == 45 and c.macs == 50


def test_small_cnn_totals_and_graph_after_edit():
    x = keras.Input((8, 8, 1))
    h = L.Conv2D(4, 3, padding="same", name="c1")(x)
    h = L.BatchNormalization(name="bn")(h)
    h = L.Flatten(name="f")(h)
    m = keras.Model(x, L.Dense(10, name="fc")(h))
    c = count_model(m)
    assert c.params == (9 * 4 + 4) + 4 * 4 + (8 * 8 * 4 * 10 + 10) == m.count_params()
    assert c.macs == 8 * 8 * 4 * 9 + 8 * 8 * 4 * 10
    g = ModelGraph.from_keras(m)
    g.nodes["c1"].config["filters"] = 2
    g.nodes["c1"].weights[:] = [w[..., :2] for w in g.nodes["c1"].weights]
    g.nodes["bn"].weights[:] = [w[:2] for w in g.nodes["bn"].weights]
    g.nodes["fc"].weights[0] = g.nodes["fc"].weights[0].reshape(8, 8, 4, 10)[:, :, :2].reshape(-1, 10)
    g.refresh_shapes()
    c2 = count_model(g)
    assert c2.macs == 8 * 8 * 2 * 9 + 8 * 8 * 2 * 10
    assert c2.params == count_model(g.to_keras()).params == (9 * 2 + 2) + 4 * 2 + (128 * 10 + 10)


@pytest.mark.parametrize("arch,params", [("ResNet50", 25_636_712), ("MobileNetV2", 3_538_984)])
def test_applications_match_keras(arch, params):
    m = getattr(keras.applications, arch)(weights=None, input_shape=(96, 96, 3))
    c = count_model(m)
    assert c.params == m.count_params() == params
    assert c.trainable_params == sum(int(np.size(w)) for w in m.trainable_weights)
    assert c.unknown == []
    assert c.macs > 0
