"""Traversal order: producers first, ties in the graph's own order; nested layers walked depth first."""
from __future__ import annotations

from types import SimpleNamespace

import keras

from kerascompress.graph.model_graph import ModelGraph, TensorRef
from kerascompress.graph.traversal import all_layers, node_and_index, topological_order


def _graph(edges: dict[str, list[str]]):
    """A stand-in graph: node name -> names of its producers, in insertion order."""
    return SimpleNamespace(nodes={n: SimpleNamespace(inputs=[(p, 0) for p in ps]) for n, ps in edges.items()})


def test_producers_come_first_and_ties_keep_graph_order():
    g = _graph({"out": ["b", "a"], "a": ["in"], "in": [], "b": ["in", "a"]})
    assert topological_order(g) == ["in", "a", "b", "out"]


def test_independent_branches_keep_their_insertion_order():
    g = _graph({"x": [], "y": [], "x1": ["x"], "y1": ["y"], "cat": ["y1", "x1"]})
    assert topological_order(g) == ["x", "y", "x1", "y1", "cat"]


def test_a_node_reading_one_producer_twice_is_not_counted_twice():
    g = _graph({"in": [], "sq": ["in", "in"], "out": ["sq"]})
    assert topological_order(g) == ["in", "sq", "out"]


def test_references_as_tuples_or_tensor_refs():
    assert node_and_index(("conv", 2)) == ("conv", 2)
    assert node_and_index(TensorRef("conv", 1)) == ("conv", 1)


def test_order_of_a_real_model_graph():
    inp = keras.Input((4,), name="x")
    a = keras.layers.Dense(3, name="a")(inp)
    b = keras.layers.Dense(3, name="b")(inp)
    out = keras.layers.Add(name="add")([b, a])
    order = topological_order(ModelGraph.from_keras(keras.Model(inp, out)))
    assert order.index("x") < order.index("a") < order.index("add")
    assert order.index("b") < order.index("add")


def test_all_layers_descends_into_nested_models():
    inner_in = keras.Input((4,))
    inner = keras.Model(inner_in, keras.layers.Dense(4, name="inner_dense")(inner_in), name="inner")
    inp = keras.Input((4,), name="x")
    out = keras.layers.Dense(2, name="head")(inner(inp))
    layers = all_layers(keras.Model(inp, out))
    assert [layer.name for layer in layers if not isinstance(layer, keras.layers.InputLayer)] == [
        "inner", "inner_dense", "head"]
    assert layers[0].name == "x" and isinstance(layers[2], keras.layers.InputLayer)  # the inner model's own input
