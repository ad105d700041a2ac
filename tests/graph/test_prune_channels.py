"""Exactness of channel surgery: pruned models compute the original function with removed channels zeroed.

The zeroing reference (tests/helpers/exactness.py) is written independently of the slicing code.
"""
from __future__ import annotations

import keras
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from keras import layers as L

from kerascompress.graph.channel_groups import find_channel_groups
from kerascompress.graph.model_graph import ModelGraph
from kerascompress.graph.prune_channels import prune_channels
from tests.helpers.exactness import (
    check_exact,
    inputs_for,
    outputs,
    random_keep,
    randomize,
)

# ----------------------------------------------------------------------------- named models


def test_residual_cnn_exact():
    from kerascompress.examples import zoo

    model = randomize(zoo.residual_cnn(width=8))
    _, groups, keep, pruned = check_exact(model)
    assert pruned.count_params() < model.count_params()
    assert len(groups.prunable) == 9


def test_mobilenetv2_exact():
    model = randomize(keras.applications.MobileNetV2(input_shape=(64, 64, 3), alpha=0.35, weights=None))
    _, groups, keep, pruned = check_exact(model, fraction=0.5)
    assert pruned.count_params() < 0.6 * model.count_params()


def test_resnet50_exact():
    model = randomize(keras.applications.ResNet50(input_shape=(64, 64, 3), weights=None))
    _, groups, _, pruned = check_exact(model, fraction=0.5, n=1)
    assert pruned.count_params() < 0.5 * model.count_params()


@pytest.mark.slow
def test_densenet121_exact():
    model = randomize(keras.applications.DenseNet121(input_shape=(64, 64, 3), weights=None))
    check_exact(model, fraction=0.6, n=1)


def test_flatten_into_dense_exact():
    x = keras.Input((6, 6, 3))
    y = L.Conv2D(8, 3, activation="relu")(x)
    y = L.BatchNormalization()(y)
    y = L.MaxPooling2D()(y)  # (2, 2, 8)
    z = L.Dense(16, activation="relu")(L.Flatten()(y))
    w = L.Dense(4)(L.Reshape((4, 8))(y))  # channel axis kept by the reshape
    v = L.Reshape((32,))(y)  # a flatten written as a reshape
    out = L.Dense(3)(L.Concatenate()([z, L.Flatten()(w), v]))
    _, groups, _, _ = check_exact(randomize(keras.Model(x, out)))
    assert len(groups.prunable) == 3


def test_squeeze_excite_exact():
    x = keras.Input((8, 8, 4))
    y = L.Conv2D(16, 3, padding="same")(x)
    y = L.ReLU()(y)
    s = L.GlobalAveragePooling2D(keepdims=True)(y)
    s = L.Conv2D(4, 1, activation="relu")(s)
    s = L.Conv2D(16, 1, activation="sigmoid")(s)
    y = L.Multiply()([y, s])
    t = L.GlobalAveragePooling2D()(y)
    t = L.Reshape((1, 1, 16))(t)  # the Keras-applications style of gate
    t = L.Dense(16, activation="sigmoid")(t)
    y = L.Multiply()([y, t])
    out = L.Dense(2)(L.GlobalMaxPooling2D()(y))
    graph, groups, keep, _ = check_exact(randomize(keras.Model(x, out)))
    big = [g for g in groups.prunable if g.size == 16]
    assert len(big) == 1 and len(big[0].producers) == 3  # conv, both gates coupled


def test_layer_zoo_exact():
    """Depthwise with multiplier, grouped and transposed convs, separable, padding, per-channel constants."""
    x = keras.Input((8, 8, 3))
    a = L.Conv2D(8, 3, padding="same")(x)
    a = L.Rescaling(scale=[0.5 + i for i in range(8)], offset=[0.1 * i for i in range(8)])(a)
    a = L.PReLU()(a)
    b = L.DepthwiseConv2D(3, depth_multiplier=2, padding="same")(a)
    b = L.BatchNormalization()(b)
    c = L.Conv2D(8, 3, padding="same", groups=4)(b)
    d = L.Conv2DTranspose(6, 3, padding="same")(c)
    d = L.ZeroPadding2D(1)(d)
    d = L.Cropping2D(1)(d)
    e = L.SeparableConv2D(8, 3, padding="same", depth_multiplier=2)(L.UpSampling2D()(d))
    e = L.AveragePooling2D(2)(e)
    f = L.Concatenate()([e, c, L.Activation("swish")(a)])
    f = L.Normalization(mean=list(np.linspace(0, 1, 24)), variance=list(np.linspace(1, 2, 24)))(f)
    g = L.Conv1D(5, 2)(L.Reshape((64, 24))(f))
    out = L.Dense(4)(L.Flatten()(g))
    graph, groups, _, pruned = check_exact(randomize(keras.Model(x, out)))
    assert not groups.frozen_nodes


def test_multi_input_multi_output_and_shared_layers():
    a, b = keras.Input((8, 8, 3), name="a"), keras.Input((8, 8, 3), name="b")
    shared = L.Conv2D(8, 3, padding="same", name="shared")
    ya, yb = shared(a), shared(b)
    z = L.Add()([L.ReLU()(ya), yb])
    z = L.Conv2D(12, 1)(z)
    o1 = L.Dense(3, name="o1")(L.GlobalAveragePooling2D()(z))
    o2 = L.Conv2D(2, 1, name="o2")(L.Subtract()([ya, L.Conv2D(8, 1)(z)]))
    model = randomize(keras.Model([a, b], [o1, o2]))
    _, groups, _, pruned = check_exact(model)
    assert [tuple(o.shape) for o in pruned.outputs] == [tuple(o.shape) for o in model.outputs]


def test_nested_submodel_exact():
    inner_in = keras.Input((8, 8, 8))
    h = L.Conv2D(16, 3, padding="same", activation="relu")(inner_in)
    h = L.Conv2D(8, 3, padding="same")(h)
    inner = keras.Model(inner_in, L.Add()([h, inner_in]), name="block")
    x = keras.Input((8, 8, 3))
    y = L.Conv2D(8, 3, padding="same")(x)
    y = inner(y)
    y = inner(y)  # called twice: shared weights
    out = L.Dense(4)(L.GlobalAveragePooling2D()(y))
    check_exact(randomize(keras.Model(x, out)))


@keras.saving.register_keras_serializable(package="kc_tests")
class ChannelShuffle(L.Layer):
    """A custom layer that reverses channels: pruning through it would be wrong."""

    def call(self, x):
        return keras.ops.flip(x, axis=-1)


def test_custom_layer_freezes_its_groups():
    x = keras.Input((8, 8, 3))
    y = L.Conv2D(8, 3, padding="same", name="before")(x)
    y = ChannelShuffle(name="shuffle")(y)
    y = L.Conv2D(8, 3, padding="same", name="after")(y)
    z = L.Conv2D(8, 3, padding="same", name="free")(y)
    out = L.Dense(2)(L.GlobalAveragePooling2D()(z))
    graph, groups, _, _ = check_exact(randomize(keras.Model(x, out)))
    frozen = {p for g in groups.frozen for p in g.producers}
    assert "before" in frozen and "shuffle" in frozen
    assert any("ChannelShuffle" in r for g in groups.frozen for r in g.frozen)
    assert {p for g in groups.prunable for p in g.producers} == {"after", "free"}


def test_lambda_freezes_not_crashes():
    x = keras.Input((8, 8, 3))
    y = L.Conv2D(8, 3, padding="same", name="c1")(x)
    y = L.Lambda(lambda t: t * 2.0, name="double")(y)
    out = L.Dense(2)(L.GlobalAveragePooling2D()(L.Conv2D(8, 1, name="c2")(y)))
    _, groups, _, _ = check_exact(randomize(keras.Model(x, out)))
    assert any("Lambda" in r for g in groups.frozen for r in g.frozen)


def test_frozen_group_cannot_be_pruned():
    from kerascompress.examples import zoo

    graph = ModelGraph.from_keras(zoo.small_cnn(width=4))
    groups = find_channel_groups(graph)
    g = groups.frozen[-1]
    with pytest.raises(ValueError, match="frozen"):
        prune_channels(graph, groups, {g.id: [0]})


def test_caller_graph_and_model_untouched():
    from kerascompress.examples import zoo

    model = randomize(zoo.small_cnn(width=8))
    before = [w.copy() for w in model.get_weights()]
    graph = ModelGraph.from_keras(model)
    groups = find_channel_groups(graph)
    prune_channels(graph, groups, random_keep(groups, 3)).to_keras()
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    assert graph.nodes["conv1"].config["filters"] == 8


# ----------------------------------------------------------------------------- random DAGs


@st.composite
def random_dag(draw):
    """A random channels-last DAG of the supported layer types (same spatial size throughout)."""
    x = keras.Input((6, 6, draw(st.integers(1, 4))))
    pool = [x]
    for i in range(draw(st.integers(2, 8))):
        src = pool[draw(st.integers(0, len(pool) - 1))]
        c = src.shape[-1]
        kind = draw(st.sampled_from(["conv", "dw", "sep", "bn", "relu", "add", "concat", "se", "group", "tconv", "dense"]))
        if kind == "conv":
            y = L.Conv2D(draw(st.integers(2, 8)), draw(st.sampled_from([1, 3])), padding="same")(src)
        elif kind == "dw":
            y = L.DepthwiseConv2D(3, padding="same", depth_multiplier=draw(st.integers(1, 2)))(src)
        elif kind == "sep":
            y = L.SeparableConv2D(draw(st.integers(2, 8)), 3, padding="same")(src)
        elif kind == "bn":
            y = L.BatchNormalization()(src)
        elif kind == "relu":
            y = L.ReLU()(src)
        elif kind == "add":
            others = [t for t in pool if t.shape[-1] == c and t is not src]
            other = others[draw(st.integers(0, len(others) - 1))] if others else L.Conv2D(c, 1)(src)
            merge = draw(st.sampled_from([L.Add, L.Maximum, L.Average, L.Multiply, L.Subtract]))
            y = merge()([src, other])
        elif kind == "concat":
            y = L.Concatenate()([src, pool[draw(st.integers(0, len(pool) - 1))]])
        elif kind == "se":
            s = L.Conv2D(c, 1, activation="sigmoid")(L.GlobalAveragePooling2D(keepdims=True)(src))
            y = L.Multiply()([src, s])
        elif kind == "group":
            g = draw(st.sampled_from([d for d in (1, 2, 3) if c % d == 0]))
            y = L.Conv2D(g * draw(st.integers(1, 3)), 3, padding="same", groups=g)(src)
        elif kind == "tconv":
            y = L.Conv2DTranspose(draw(st.integers(2, 6)), 3, padding="same")(src)
        else:
            y = L.Dense(draw(st.integers(2, 6)))(src)
        pool.append(y)
    leaves = pool[1:] if len(pool) > 1 else pool
    heads = [L.GlobalAveragePooling2D()(t) for t in leaves[-2:]]
    if draw(st.booleans()):
        heads.append(L.Flatten()(leaves[-1]))
    merged = heads[0] if len(heads) == 1 else L.Concatenate()(heads)
    return keras.Model(x, L.Dense(3)(merged))


@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(model=random_dag(), seed=st.integers(0, 1000))
def test_random_dags_exact(model, seed):
    check_exact(randomize(model, seed), seed=seed)


# ----------------------------------------------------------------------------- exported artifacts


def _pruned_small():
    from kerascompress.examples import zoo

    model = randomize(zoo.residual_cnn(width=8))
    graph = ModelGraph.from_keras(model)
    groups = find_channel_groups(graph)
    return prune_channels(graph, groups, random_keep(groups, 5, 0.5)).to_keras()


def test_pruned_model_converts_to_tflite_and_matches():
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    pruned = _pruned_small()
    blob = tf.lite.TFLiteConverter.from_keras_model(pruned).convert()
    interp = Interpreter(model_content=blob)
    interp.allocate_tensors()
    x = inputs_for(pruned, 1)
    interp.set_tensor(interp.get_input_details()[0]["index"], x)
    interp.invoke()
    got = interp.get_tensor(interp.get_output_details()[0]["index"])
    assert np.abs(got - outputs(pruned, x)[0]).max() < 1e-5


def test_pruned_model_converts_to_onnx_and_matches():
    import onnxruntime as ort
    import tensorflow as tf
    import tf2onnx

    pruned = _pruned_small()
    spec = [tf.TensorSpec((None,) + tuple(t.shape[1:]), tf.float32, name=f"in{i}") for i, t in enumerate(pruned.inputs)]
    fn = tf.function(lambda *xs: pruned(list(xs) if len(xs) > 1 else xs[0], training=False))
    proto, _ = tf2onnx.convert.from_function(fn, input_signature=spec, opset=13)
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    x = inputs_for(pruned, 2)
    got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    assert np.abs(got - outputs(pruned, x)[0]).max() < 1e-5
