"""ModelGraph: exact round trips, error messages, the source is never changed, editing."""
from __future__ import annotations

import hashlib

import keras
import numpy as np
import pytest
from keras import layers as L

from kerascompress.errors import UnsupportedModelError
from kerascompress.graph import ModelGraph, Node, TensorRef


def weights_hash(model: keras.Model) -> str:
    h = hashlib.sha256()
    for w in model.get_weights():
        h.update(np.ascontiguousarray(w).tobytes())
    return h.hexdigest()


def input_layer_names(model: keras.Model) -> list[str]:
    return [t._keras_history.operation.name for t in model.inputs]


def rand_like(model: keras.Model, batch: int = 2):
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((batch,) + tuple(t.shape[1:])).astype("float32") for t in model.inputs]
    return xs[0] if len(xs) == 1 else xs


def assert_round_trip(model: keras.Model, x=None) -> tuple[ModelGraph, keras.Model]:
    before = weights_hash(model)
    g = ModelGraph.from_keras(model)
    rebuilt = g.to_keras()
    x = rand_like(model) if x is None else x
    a = keras.tree.flatten(model(x))
    b = keras.tree.flatten(rebuilt(x))
    assert len(a) == len(b)
    for p, q in zip(a, b):
        assert np.max(np.abs(np.asarray(p) - np.asarray(q))) == 0.0
    assert input_layer_names(rebuilt) == input_layer_names(model)
    # New variables, never shared with the source.
    src_ids = {id(v) for v in model.weights}
    assert not any(id(v) in src_ids for v in rebuilt.weights)
    assert weights_hash(model) == before
    assert rebuilt.count_params() == model.count_params()
    return g, rebuilt


# ------------------------------------------------------------------ round trips
def test_sequential():
    m = keras.Sequential([keras.Input((8,)), L.Dense(6, activation="relu"), L.Dense(3)], name="seq")
    g, _ = assert_round_trip(m)
    assert [n.class_name for n in g.nodes.values()] == ["InputLayer", "Dense", "Dense"]


def test_residual_add_and_concatenate():
    x = keras.Input((8, 8, 3), name="img")
    h = L.Conv2D(4, 3, padding="same", name="c1")(x)
    r = L.Conv2D(4, 3, padding="same", name="c2")(h)
    h = L.Add(name="add")([h, r])
    h = L.Concatenate(name="cat")([h, x])
    m = keras.Model(x, L.GlobalAveragePooling2D(name="gap")(h))
    g, _ = assert_round_trip(m)
    assert g.consumers("c1") == [("c2", 0), ("add", 0)]
    assert g.producers("cat") == [TensorRef("add", 0), TensorRef("img", 0)]
    assert g.nodes["cat"].input_shapes == [(None, 8, 8, 4), (None, 8, 8, 3)]
    assert g.nodes["cat"].output_shapes == [(None, 8, 8, 7)]


def test_nested_functional_and_sequential_are_inlined():
    seq = keras.Sequential([keras.Input((8,)), L.Dense(8, name="d")], name="seqsub")
    ii = keras.Input((8,))
    fsub = keras.Model(ii, L.Dense(5, name="d")(ii), name="fsub")  # name clashes with seqsub's d
    x = keras.Input((8,), name="x")
    m = keras.Model(x, fsub(seq(x)), name="outer")
    g, rebuilt = assert_round_trip(m)
    assert [n.class_name for n in g.nodes.values()] == ["InputLayer", "Dense", "Dense"]
    assert g.layer_paths["seqsub/d"] == "d"
    assert g.layer_paths["fsub/d"] == "fsub_d"
    assert g.node_for_path("fsub/d") == ["fsub_d"]
    assert {l.name for l in rebuilt.layers} == {"x", "d", "fsub_d"}


def test_shared_submodel_called_twice_and_training_pushed_down():
    base = keras.Sequential([keras.Input((4,)), L.Dense(4, name="bd"), L.BatchNormalization(name="bn")], name="base")
    x = keras.Input((4,))
    y = base(base(x, training=False), training=False)
    m = keras.Model(x, y)
    g, rebuilt = assert_round_trip(m)
    assert g.nodes_of_layer("bd") == ["bd@0", "bd@1"]
    assert g.nodes["bd@0"].weights is g.nodes["bd@1"].weights  # one shared list
    assert g.nodes["bn@1"].call_kwargs["training"] is False
    assert rebuilt.count_params() == m.count_params() == 4 * 4 + 4 + 4 * 4


def test_shared_layer_called_twice():
    a, b = keras.Input((6,), name="a"), keras.Input((6,), name="b")
    shared = L.Dense(3, name="shared")
    m = keras.Model([a, b], L.Subtract(name="sub")([shared(a), shared(b)]))
    g, rebuilt = assert_round_trip(m)
    assert list(g.nodes) == ["a", "b", "shared@0", "shared@1", "sub"]
    assert len(rebuilt.weights) == 2


def test_two_inputs_two_outputs_dict():
    a, b = keras.Input((6,), name="a"), keras.Input((4,), name="b")
    h = L.Concatenate(name="cat")([a, b])
    m = keras.Model({"a": a, "b": b}, {"y1": L.Dense(2, name="y1")(h), "y2": L.Dense(3, name="y2")(h)})
    x = {"a": np.ones((2, 6), "float32"), "b": np.ones((2, 4), "float32")}
    g, rebuilt = assert_round_trip(m, x)
    assert g.outputs == [TensorRef("y1"), TensorRef("y2")]
    out = rebuilt(x)
    assert set(out) == {"y1", "y2"} and out["y2"].shape == (2, 3)


def test_multi_output_layer_and_keras_op():
    @keras.saving.register_keras_serializable(package="kc_test")
    class SplitHalves(L.Layer):
        def call(self, x):
            return x[:, :2], x[:, 2:]

    x = keras.Input((4,))
    p, q = SplitHalves(name="split")(x)
    m = keras.Model(x, keras.ops.multiply(L.Dense(2, name="dp")(p), q))
    g, _ = assert_round_trip(m)
    # keras names the op layer "multiply", "multiply_1", ... depending on what ran before
    (op_name,) = [n for n in g.nodes if n.startswith("multiply")]
    assert g.consumers("split") == [("dp", 0), (op_name, 1)]
    assert g.nodes[op_name].inputs == [TensorRef("dp", 0), TensorRef("split", 1)]


def test_lambda_layer():
    x = keras.Input((5,))
    m = keras.Model(x, L.Dense(2)(L.Lambda(lambda t, k: t * k, arguments={"k": 3.0}, name="lam")(x)))
    g, _ = assert_round_trip(m)
    assert g.nodes["lam"].class_name == "Lambda"


def test_custom_registered_layer():
    @keras.saving.register_keras_serializable(package="kc_test")
    class Scale(L.Layer):
        def __init__(self, init=2.0, **kw):
            super().__init__(**kw)
            self.init = init

        def build(self, shape):
            self.s = self.add_weight(shape=(shape[-1],), initializer=keras.initializers.Constant(self.init))

        def call(self, x):
            return x * self.s

        def get_config(self):
            return {**super().get_config(), "init": self.init}

    x = keras.Input((3,))
    m = keras.Model(x, Scale(1.5, name="scale")(L.Dense(3)(x)))
    m.get_layer("scale").set_weights([np.array([1.0, 2.0, 3.0], "float32")])
    g, rebuilt = assert_round_trip(m)
    np.testing.assert_array_equal(rebuilt.get_layer("scale").get_weights()[0], [1, 2, 3])


def test_custom_layer_without_config_is_refused_by_name():
    class NoConfig(L.Layer):
        def __init__(self, units):
            super().__init__()
            self.units = units

        def call(self, x):
            return x[:, : self.units]

    x = keras.Input((4,))
    m = keras.Model(x, NoConfig(2)(x))
    with pytest.raises(UnsupportedModelError, match="NoConfig.*get_config"):
        ModelGraph.from_keras(m)


def test_flatten_dense_and_squeeze_excite():
    x = keras.Input((6, 6, 4))
    h = L.Conv2D(8, 3, padding="same", name="conv")(x)
    s = L.GlobalAveragePooling2D(name="se_gap")(h)
    s = L.Dense(2, activation="relu", name="se_red")(s)
    s = L.Dense(8, activation="sigmoid", name="se_exp")(s)
    s = L.Reshape((1, 1, 8), name="se_rs")(s)
    h = L.Multiply(name="se_mul")([h, s])
    m = keras.Model(x, L.Dense(3, name="fc")(L.Flatten(name="flat")(h)))
    g, _ = assert_round_trip(m)
    assert g.consumers("conv") == [("se_gap", 0), ("se_mul", 0)]


def test_masking_embedding_lstm():
    x = keras.Input((5,), dtype="int32")
    m = keras.Model(x, L.LSTM(3, name="lstm")(L.Embedding(10, 4, mask_zero=True, name="emb")(x)))
    g, _ = assert_round_trip(m, np.array([[1, 2, 0, 0, 0], [3, 4, 5, 6, 0]]))
    # The mask is an explicit op node feeding the LSTM's `mask` argument.
    assert g.nodes["lstm"].call_kwargs["mask"].index == 1


@pytest.mark.parametrize("arch", ["ResNet50", "MobileNetV2", "DenseNet121"])
def test_keras_applications(arch):
    model = getattr(keras.applications, arch)(weights=None, input_shape=(96, 96, 3))
    g, rebuilt = assert_round_trip(model, rand_like(model, batch=1))
    assert len(g.nodes) == len(model.layers)
    assert [l.name for l in rebuilt.layers] == [l.name for l in model.layers]


# ------------------------------------------------------------------ errors
def test_subclassed_model_is_refused_and_untouched():
    class Sub(keras.Model):
        def __init__(self):
            super().__init__()
            self.d = L.Dense(2)

        def call(self, x):
            return self.d(x)

    m = Sub()
    m(np.ones((1, 3), "float32"))
    before = weights_hash(m)
    with pytest.raises(UnsupportedModelError, match="subclassed.*Functional.*Sequential.*functional model"):
        ModelGraph.from_keras(m)
    assert weights_hash(m) == before


def test_unbuilt_sequential_is_refused():
    with pytest.raises(UnsupportedModelError, match="keras.Input"):
        ModelGraph.from_keras(keras.Sequential([L.Dense(2)]))


# ------------------------------------------------------------------ editing
def _conv_net():
    x = keras.Input((8, 8, 3), name="x")
    h = L.Conv2D(6, 3, padding="same", activation="relu", name="c1")(x)
    h = L.BatchNormalization(name="bn")(h)
    h = L.Conv2D(4, 3, padding="same", name="c2")(h)
    return keras.Model(x, L.Dense(2, name="fc")(L.GlobalAveragePooling2D(name="gap")(h)))


def test_edit_conv_filters_and_slice_consumers():
    m = _conv_net()
    before = weights_hash(m)
    g = ModelGraph.from_keras(m)
    keep = np.array([0, 2, 3, 5])
    c1, bn, c2 = g.nodes["c1"], g.nodes["bn"], g.nodes["c2"]
    c1.config["filters"] = len(keep)
    c1.weights[:] = [c1.weights[0][..., keep], c1.weights[1][keep]]
    bn.weights[:] = [w[keep] for w in bn.weights]
    c2.weights[0] = c2.weights[0][:, :, keep, :]
    pruned = g.to_keras()
    assert pruned.get_layer("c1").kernel.shape == (3, 3, 3, 4)
    assert pruned.get_layer("c2").kernel.shape == (3, 3, 4, 4)
    # Same function as the source with c2's inputs from the dropped channels zeroed.
    ref_g = ModelGraph.from_keras(m)
    drop = np.setdiff1d(np.arange(6), keep)
    ref_g.nodes["c2"].weights[0][:, :, drop, :] = 0
    x = rand_like(m)
    np.testing.assert_allclose(pruned(x), ref_g.to_keras()(x), rtol=1e-5, atol=1e-6)
    assert weights_hash(m) == before
    g.refresh_shapes()
    assert g.nodes["c1"].output_shapes == [(None, 8, 8, 4)]


def test_replace_dense_by_low_rank_chain():
    x = keras.Input((10,), name="x")
    m = keras.Model(x, L.Dense(3, name="out")(L.Dense(8, name="fc")(x)))
    g = ModelGraph.from_keras(m)
    w, b = g.nodes["fc"].weights
    u, s, vt = np.linalg.svd(w, full_matrices=False)  # full rank 8 -> exact
    first = Node.create(L.Dense(8, use_bias=False), weights=[u * s], name="fc_u")
    second = Node.create(L.Dense(8), weights=[vt, b], name="fc_v")
    g.replace_node("fc", [first, second])
    assert list(g.nodes) == ["x", "fc_u", "fc_v", "out"]
    assert g.producers("out") == [TensorRef("fc_v", 0)]
    new = g.to_keras()
    xv = rand_like(m)
    np.testing.assert_allclose(new(xv), m(xv), rtol=1e-4, atol=1e-5)


def test_remove_insert_copy():
    m = _conv_net()
    g = ModelGraph.from_keras(m)
    g2 = g.copy()
    g2.remove_node("bn")
    assert g2.producers("c2") == [TensorRef("c1", 0)] and "bn" in g.nodes
    g2.nodes["c1"].weights[0][:] = 0
    assert np.any(g.nodes["c1"].weights[0] != 0)  # deep copy
    g2.insert_after("c2", Node.create(L.ReLU(), name="relu_after_c2"))
    assert g2.consumers("relu_after_c2") == [("gap", 0)]
    out = g2.to_keras()(rand_like(m))
    assert out.shape == (2, 2)
    # A graph output can be bypassed too.
    g3 = g.copy()
    g3.remove_node("fc")
    assert g3.outputs == [TensorRef("gap", 0)]
    assert g3.to_keras().output_shape == (None, 4)


def test_replace_drops_call_kwargs_the_new_layer_does_not_take():
    m = _conv_net()
    g = ModelGraph.from_keras(m)
    assert "training" in g.nodes["bn"].call_kwargs or "mask" in g.nodes["bn"].call_kwargs
    g.replace_node("bn", [Node.create(L.ReLU(), name="relu_instead")])
    assert g.nodes["relu_instead"].call_kwargs == {}
    assert g.producers("c2") == [TensorRef("relu_instead", 0)]
    assert g.to_keras()(rand_like(m)).shape == (2, 2)
