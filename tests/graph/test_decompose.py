"""Tests for kerascompress.graph.decompose: exact at full rank, error falls with rank,
exact parameter/MAC counts, nested and shared layers, and what is refused."""
from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import layers

from kerascompress.graph import decompose as dec
from kerascompress.graph.model_graph import ModelGraph
from kerascompress.models.io import weights_digest


def _decomposed(model, layer, method, rank):
    g = ModelGraph.from_keras(model)
    node = g.nodes[g.nodes_of_layer(layer)[0]]
    new = dec.decompose(g, layer, method, rank)
    return g.to_keras(), new, node


def _rand_model_conv(strides=1, padding="same", dilation=1, kernel=(3, 3), activation="relu"):
    inp = keras.Input((11, 10, 5))
    h = layers.Conv2D(12, kernel, strides=strides, padding=padding, dilation_rate=dilation,
                      activation=activation, name="conv")(inp)
    h = layers.GlobalAveragePooling2D()(h)
    out = layers.Dense(3, name="head")(h)
    return keras.Model(inp, out)


@pytest.mark.parametrize("method", ["channel", "spatial"])
@pytest.mark.parametrize(
    "kw", [dict(), dict(strides=2), dict(padding="valid", kernel=(3, 2)), dict(dilation=2), dict(strides=(2, 3), kernel=(5, 3))]
)
def test_conv_exact_at_full_rank(method, kw):
    model = _rand_model_conv(**kw)
    x = np.random.default_rng(0).standard_normal((3, 11, 10, 5)).astype(np.float32)
    g = ModelGraph.from_keras(model)
    full = dec.svd(g.nodes["conv"], method).full_rank
    new_model, new, _ = _decomposed(model, "conv", method, full)
    assert new == ["conv_lr1", "conv_lr2"]
    diff = np.abs(new_model.predict(x, verbose=0) - model.predict(x, verbose=0)).max()
    assert diff < 1e-4
    kinds = [type(new_model.get_layer(n)).__name__ for n in new]
    assert kinds == ["Conv2D", "Conv2D"]
    second = new_model.get_layer("conv_lr2")
    assert second.activation.__name__ == "relu" and second.use_bias
    first = new_model.get_layer("conv_lr1")
    assert first.activation.__name__ == "linear" and not first.use_bias


def test_dense_exact_at_full_rank_and_structure():
    inp = keras.Input((20,))
    h = layers.Dense(30, activation="relu", name="fc")(inp)
    out = layers.Dense(4, activation="softmax", name="out")(h)
    model = keras.Model(inp, out)
    x = np.random.default_rng(1).standard_normal((8, 20)).astype(np.float32)
    new_model, new, _ = _decomposed(model, "fc", "svd", 20)
    assert np.abs(new_model.predict(x, verbose=0) - model.predict(x, verbose=0)).max() < 1e-4
    a, b = (new_model.get_layer(n) for n in new)
    assert (a.units, a.use_bias, a.activation.__name__) == (20, False, "linear")
    assert (b.units, b.use_bias, b.activation.__name__) == (30, True, "relu")


@pytest.mark.parametrize(
    "equation,in_shape,out_shape,bias",
    [("ab,bc->ac", (16,), (24,), "c"), ("abc,cd->abd", (5, 16), (5, 24), "d"), ("...b,bc->...c", (5, 16), (24,), None)],
)
def test_einsum_dense_exact_at_full_rank(equation, in_shape, out_shape, bias):
    inp = keras.Input(in_shape)
    out = layers.EinsumDense(equation, output_shape=out_shape, bias_axes=bias, activation="tanh", name="ed")(inp)
    model = keras.Model(inp, out)
    model.get_layer("ed").set_weights([np.random.default_rng(2).standard_normal(w.shape).astype(np.float32)
                                       for w in model.get_layer("ed").get_weights()])
    x = np.random.default_rng(3).standard_normal((4,) + in_shape).astype(np.float32)
    new_model, new, node = _decomposed(model, "ed", "svd", 16)
    assert np.abs(new_model.predict(x, verbose=0) - model.predict(x, verbose=0)).max() < 1e-4
    assert all(type(new_model.get_layer(n)).__name__ == "EinsumDense" for n in new)
    assert new_model.count_params() == dec.decomposed_cost(node, "svd", 16).params


@pytest.mark.parametrize(
    "equation,expected",
    [("ab,bc->ac", ("b", "c")), ("abc,cd->abd", ("c", "d")), ("...b,bc->...c", ("b", "c")),
     ("abc,cde->abde", None), ("abc,bd->acd", None), ("abc,cd->abc", None), ("ab,bc->ca", None), ("ab,ab->a", None)],
)
def test_plain_matmul_axes(equation, expected):
    assert dec.plain_matmul_axes(equation) == expected


@pytest.mark.parametrize("method,rank_step", [("svd", None), ("channel", None), ("spatial", None)])
def test_error_decreases_as_rank_grows(method, rank_step):
    rng = np.random.default_rng(4)
    if method == "svd":
        inp = keras.Input((32,))
        out = layers.Dense(24, name="layer")(inp)
        x = rng.standard_normal((64, 32)).astype(np.float32)
    else:
        inp = keras.Input((8, 8, 6))
        out = layers.Conv2D(16, 3, padding="same", name="layer")(inp)
        x = rng.standard_normal((16, 8, 8, 6)).astype(np.float32)
    model = keras.Model(inp, out)
    ref = model.predict(x, verbose=0)
    g = ModelGraph.from_keras(model)
    full = dec.svd(g.nodes["layer"], method).full_rank
    errors = []
    for r in sorted({1, full // 4, full // 2, 3 * full // 4, full}):
        new_model, _, _ = _decomposed(model, "layer", method, r)
        errors.append(float(np.linalg.norm(new_model.predict(x, verbose=0) - ref)))
    assert all(b < a for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < 1e-3 * np.linalg.norm(ref)


def test_parameter_and_mac_counts_are_exact():
    inp = keras.Input((10, 10, 16))
    h = layers.Conv2D(32, 3, padding="same", name="conv")(inp)  # 10x10 out
    h = layers.Conv2D(32, 3, strides=2, padding="same", name="conv_s2")(h)  # 5x5 out
    h = layers.Flatten()(h)
    out = layers.Dense(80, name="fc")(h)  # 800 -> 80
    model = keras.Model(inp, out)
    g = ModelGraph.from_keras(model)
    conv, conv_s2, fc = g.nodes["conv"], g.nodes["conv_s2"], g.nodes["fc"]

    assert dec.layer_cost(conv) == dec.Cost(3 * 3 * 16 * 32 + 32, 100 * 3 * 3 * 16 * 32)
    # channel, rank 8: 3x3x16 -> 8 (no bias), then 1x1 8 -> 32 (+bias)
    assert dec.decomposed_cost(conv, "channel", 8) == dec.Cost(1152 + 256 + 32, 100 * (1152 + 256))
    # spatial, rank 8: 3x1x16 -> 8, then 1x3x8 -> 32 (+bias)
    assert dec.decomposed_cost(conv, "spatial", 8) == dec.Cost(384 + 768 + 32, 100 * (384 + 768))
    # stride 2: the 3x1 conv runs at 5 rows x all 10 columns, the 1x3 one at 5x5
    assert dec.decomposed_cost(conv_s2, "spatial", 8) == dec.Cost(3 * 32 * 8 + 3 * 8 * 32 + 32,
                                                                   5 * 10 * 768 + 25 * 768)
    assert dec.decomposed_cost(fc, "svd", 10) == dec.Cost(800 * 10 + 10 * 80 + 80, 800 * 10 + 10 * 80)

    for layer, method, rank, expected in [
        ("conv", "channel", 8, 1440), ("conv", "spatial", 8, 1184), ("fc", "svd", 10, 8880)
    ]:
        new_model, _, _ = _decomposed(model, layer, method, rank)
        others = model.count_params() - dec.layer_cost(g.nodes[layer]).params
        assert new_model.count_params() - others == expected


def test_breakeven_rank():
    inp = keras.Input((64,))
    model = keras.Model(inp, layers.Dense(64, name="sq")(inp))
    node = ModelGraph.from_keras(model).nodes["sq"]
    # r * (64 + 64) < 64 * 64  <=>  r < 32
    assert dec.breakeven_rank(node, "svd") == 31


def test_rank_for_energy():
    f = dec.SVD("svd", np.eye(4), np.array([3.0, 2.0, 1.0, 0.0]), np.eye(4))
    assert f.rank_for_energy(9 / 14) == 1
    assert f.rank_for_energy(0.9) == 2
    assert f.rank_for_energy(1.0) == 3
    assert f.energy(2) == pytest.approx(13 / 14)


def test_methods_for_and_refusals():
    inp = keras.Input((6, 6, 8))
    a = layers.Conv2D(8, 1, name="pw")(inp)
    b = layers.Conv2D(8, 3, groups=2, name="grouped")(a)
    c = layers.EinsumDense("abcd,de->abce", output_shape=(4, 4, 5), bias_axes="c", name="odd_bias")(b)
    model = keras.Model(inp, c)
    g = ModelGraph.from_keras(model)
    assert dec.methods_for(g.nodes["pw"]) == ["channel"]
    assert dec.methods_for(g.nodes["grouped"]) == []
    assert dec.methods_for(g.nodes["odd_bias"]) == []
    assert "grouped" in dec.unsupported_reason(g.nodes["grouped"])
    with pytest.raises(ValueError, match="cannot be factorized"):
        dec.decompose(g, "grouped", "channel", 2)


def test_nested_and_shared_layers_and_source_unchanged():
    sub_in = keras.Input((12,))
    shared = layers.Dense(16, activation="relu", name="shared")
    sub = keras.Sequential([keras.Input((12,)), layers.Dense(12, name="inner")], name="sub")
    x1 = keras.Input((12,), name="a")
    x2 = keras.Input((12,), name="b")
    y = layers.Add()([shared(sub(x1)), shared(x2)])
    model = keras.Model([x1, x2], layers.Dense(3, name="out")(y))
    del sub_in
    digest = weights_digest(model)
    rng = np.random.default_rng(5)
    xs = [rng.standard_normal((4, 12)).astype(np.float32) for _ in range(2)]
    g = ModelGraph.from_keras(model)
    inner = g.layer_paths["sub/inner"]
    dec.decompose(g, inner, "svd", 12)
    new = dec.decompose(g, "shared", "svd", 12)
    assert new == ["shared_lr1", "shared_lr2"]
    assert set(g.nodes_of_layer("shared_lr1")) == {"shared_lr1@0", "shared_lr1@1"}
    rebuilt = g.to_keras()
    assert np.abs(rebuilt.predict(xs, verbose=0) - model.predict(xs, verbose=0)).max() < 1e-4
    # the shared pair stays shared: one set of weights
    names = [layer.name for layer in rebuilt.layers]
    assert names.count("shared_lr1") == 1 and "shared" not in names
    assert weights_digest(model) == digest
