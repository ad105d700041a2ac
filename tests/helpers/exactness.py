"""Exactness of channel surgery, checked against a reference written independently of the slicing code.

The pruned model must compute the same function as the original model in which every
consumer (Conv, Dense, ...) of the removed channels has those input weights zeroed.
"""
from __future__ import annotations

import keras
import numpy as np

from kerascompress.graph.channel_groups import find_channel_groups
from kerascompress.graph.model_graph import ModelGraph
from kerascompress.graph.prune_channels import keep_mask, prune_channels, removed_units
from kerascompress.graph.traversal import node_and_index

TOL = 1e-5


def randomize(model: keras.Model, seed: int = 0) -> keras.Model:
    """Random weights everywhere (BN statistics too), so no channel is trivially zero."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        ws = layer.get_weights()
        if not ws:
            continue
        new = []
        for v, w in zip(layer.weights, ws):
            name = v.path.split("/")[-1]
            if "variance" in name or name == "gamma":
                new.append(rng.uniform(0.5, 1.5, w.shape).astype(w.dtype))
            elif name == "count" or not np.issubdtype(w.dtype, np.floating):
                new.append(w)
            else:
                fan = max(1, int(np.prod(w.shape[:-1]))) if w.ndim > 1 else 4
                new.append((rng.standard_normal(w.shape) / np.sqrt(fan)).astype(w.dtype))
        layer.set_weights(new)
    return model


def random_keep(groups, seed: int = 0, fraction: float | None = None) -> dict:
    rng = np.random.default_rng(seed)
    keep = {}
    for g in groups.prunable:
        k = max(1, int(round(g.size * fraction))) if fraction else int(rng.integers(1, g.size + 1))
        keep[g.id] = np.sort(rng.choice(g.size, k, replace=False))
    return keep


def zeroed_reference(graph, groups, keep, consumers: dict | None = None) -> keras.Model:
    """The original model with the removed channels' input weights zeroed in every consumer.

    ``consumers`` adds layer classes this reference does not know (custom layers): class
    name -> (name of the weight to zero, its input-channel axis).
    """
    removed = removed_units(groups, keep)
    ref = graph.copy()
    for name in groups.order:
        node = ref.nodes[name]
        if not getattr(groups.rules[name], "mixes_channels", False) or not node.inputs:
            continue
        mask = keep_mask(groups.maps.get(node_and_index(node.inputs[0])), removed)
        if mask is None:
            continue
        gone = np.flatnonzero(~mask)
        names = node.weight_names
        cls = node.class_name
        if consumers and cls in consumers:
            weight, axis = consumers[cls]
            k = names.index(weight)
            w = np.moveaxis(np.array(node.weights[k]), axis, 0)
            w[gone] = 0
            node.weights[k] = np.moveaxis(w, 0, axis)
        elif cls == "Dense":
            k = names.index("kernel")
            w = np.array(node.weights[k])
            w[gone, :] = 0
            node.weights[k] = w
        elif cls in ("Conv1D", "Conv2D", "Conv3D"):
            k = names.index("kernel")
            w = np.array(node.weights[k])
            a, cout = w.shape[-2], w.shape[-1]
            groups_n = len(mask) // a
            b = cout // groups_n
            for c in gone:
                gi, off = divmod(int(c), a)
                w[..., off, gi * b : (gi + 1) * b] = 0
            node.weights[k] = w
        elif cls.endswith("Transpose"):
            k = names.index("kernel")
            w = np.array(node.weights[k])
            w[..., gone] = 0
            node.weights[k] = w
        elif cls.startswith("SeparableConv"):
            k = names.index("depthwise_kernel")
            w = np.array(node.weights[k])
            w[..., gone, :] = 0
            node.weights[k] = w
        else:  # pragma: no cover - a consumer class this reference does not know
            raise AssertionError(f"no zeroing reference for {cls}")
    return ref.to_keras()


def inputs_for(model: keras.Model, n: int = 2, seed: int = 1):
    rng = np.random.default_rng(seed)
    xs = [rng.standard_normal((n,) + tuple(t.shape[1:])).astype("float32") for t in model.inputs]
    return xs if len(xs) > 1 else xs[0]


def outputs(model, x) -> list[np.ndarray]:
    out = model(x, training=False)
    out = list(out.values()) if isinstance(out, dict) else list(out) if isinstance(out, (list, tuple)) else [out]
    return [keras.ops.convert_to_numpy(o) for o in out]


def check_exact(model: keras.Model, seed: int = 0, fraction: float | None = None, n: int = 2,
                consumers: dict | None = None):
    """Prune random channels of every prunable group and compare with the zeroed reference."""
    graph = ModelGraph.from_keras(model)
    groups = find_channel_groups(graph)
    keep = random_keep(groups, seed, fraction)
    pruned = prune_channels(graph, groups, keep).to_keras()
    reference = zeroed_reference(graph, groups, keep, consumers)
    x = inputs_for(model, n, seed + 1)
    for a, b in zip(outputs(pruned, x), outputs(reference, x)):
        scale = max(1.0, float(np.abs(b).max()))
        assert np.abs(a - b).max() / scale < TOL
    return graph, groups, keep, pruned
