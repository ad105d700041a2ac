"""Parameter and MAC counting per node, for reports and for latency-free search proxies.

Conventions (batch size 1; one MAC = one multiply-accumulate):
  * Convolutions and Dense count kernel multiply-adds only; bias adds and activations
    are not counted. Dense on an N-D input multiplies by all leading (non-batch) dims.
  * BatchNormalization / LayerNormalization / GroupNormalization count 0 MACs
    (BN folds into the preceding conv at inference; LN is elementwise and small).
  * Pooling, elementwise merges, reshapes, padding, activations, Embedding lookups and
    bare Keras ops (``keras.ops.*``) count 0 MACs.
  * Any other layer is "unknown": its parameters come from its weights, it counts
    0 MACs and is listed in ``ModelCost.unknown`` so a report can say so.
  * A shared layer's parameters are counted once (on its first node); its MACs are
    counted on every call.
Counting a `ModelGraph` uses its recorded shapes; after width edits call
``graph.refresh_shapes()`` first (or count the rebuilt model).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable, Optional, Union

import keras
import numpy as np

from kerascompress.graph.model_graph import ModelGraph, Node, _weight_name

_ZERO_MAC = {
    "InputLayer", "Activation", "ReLU", "LeakyReLU", "PReLU", "ELU", "Softmax",
    "Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D",
    "GaussianDropout", "GaussianNoise", "AlphaDropout", "ActivityRegularization",
    "Flatten", "Reshape", "Permute", "RepeatVector", "Identity", "Masking",
    "Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Concatenate",
    "MaxPooling1D", "MaxPooling2D", "MaxPooling3D", "AveragePooling1D",
    "AveragePooling2D", "AveragePooling3D", "GlobalMaxPooling1D", "GlobalMaxPooling2D",
    "GlobalMaxPooling3D", "GlobalAveragePooling1D", "GlobalAveragePooling2D",
    "GlobalAveragePooling3D", "ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D",
    "Cropping1D", "Cropping2D", "Cropping3D", "UpSampling1D", "UpSampling2D",
    "UpSampling3D", "BatchNormalization", "LayerNormalization", "GroupNormalization",
    "UnitNormalization", "Rescaling", "Normalization", "Embedding",
}
_MATMUL_OPS = {"Matmul", "Einsum", "Tensordot", "Dot"}


@dataclasses.dataclass
class NodeCost:
    """Cost of one node (one layer call)."""

    class_name: str
    params: int
    trainable_params: int
    macs: int
    known: bool  # False: MACs are not modelled for this layer (counted as 0)


@dataclasses.dataclass
class ModelCost:
    """Totals and per-node breakdown, nodes in topological order."""

    params: int
    trainable_params: int
    macs: int
    nodes: dict[str, NodeCost]
    unknown: list[str]  # nodes whose MACs are not modelled

    def as_dict(self) -> dict:
        """JSON-serialisable form for reports."""
        return {
            "params": self.params,
            "trainable_params": self.trainable_params,
            "macs": self.macs,
            "unknown": list(self.unknown),
            "nodes": {k: dataclasses.asdict(v) for k, v in self.nodes.items()},
        }


def count_model(model_or_graph: Union[keras.Model, ModelGraph]) -> ModelCost:
    """Count parameters and MACs (batch 1) of a Keras model or a `ModelGraph`."""
    g = model_or_graph if isinstance(model_or_graph, ModelGraph) else ModelGraph.from_keras(model_or_graph)
    seen_layers: set[str] = set()
    per_node: dict[str, NodeCost] = {}
    unknown: list[str] = []
    for name, node in g.nodes.items():
        first = node.layer_name not in seen_layers
        seen_layers.add(node.layer_name)
        params = sum(int(np.size(w)) for w in node.weights) if first else 0
        trainable = _trainable_params(node) if first else 0
        rule, known = _classify(node)
        macs = int(rule(node)) if rule is not None else 0
        if not known and isinstance(node.layer, keras.Model):  # a subclassed model kept as one node
            macs, known = _submodel_macs(node.layer)
        if not known:
            unknown.append(name)
        per_node[name] = NodeCost(node.class_name, params, trainable, macs, known)
    return ModelCost(
        params=sum(c.params for c in per_node.values()),
        trainable_params=sum(c.trainable_params for c in per_node.values()),
        macs=sum(c.macs for c in per_node.values()),
        nodes=per_node,
        unknown=unknown,
    )


# ------------------------------------------------------------------ helpers
def _is_bare_op(node: Node) -> bool:
    """A keras.ops.* call (not a Layer): elementwise unless it is a matmul-like op."""
    layer = node.layer
    return (
        layer is not None
        and not isinstance(layer, keras.layers.Layer)
        and node.class_name not in _MATMUL_OPS
    )


def _trainable_params(node: Node) -> int:
    if node.config.get("trainable", True) is False:
        return 0
    layer = node.layer
    flags: Optional[list[bool]] = None
    if isinstance(layer, keras.layers.Layer) and len(layer.weights) == len(node.weights):
        flags = [bool(v.trainable) for v in layer.weights]
    if flags is None:  # a node added by a pass: judge by weight name
        names = node.weight_names or [""] * len(node.weights)
        flags = [not ("moving_" in n) for n in names]
    return sum(int(np.size(w)) for w, t in zip(node.weights, flags) if t)


def _prod(dims) -> int:
    return int(math.prod(1 if d is None else int(d) for d in dims))


def _out_elems(node: Node) -> int:
    """Elements of output 0 for batch 1."""
    return _prod(node.output_shapes[0][1:])


def _kernel(node: Node, name: str = "kernel") -> np.ndarray:
    if node.weight_names and name in node.weight_names:
        return node.weights[node.weight_names.index(name)]
    return node.weights[0]


def _conv(node: Node) -> int:
    # kernel (*k, cin/groups, filters): each output element costs prod(k)*cin/groups MACs.
    k = _kernel(node)
    return _out_elems(node) * (k.size // k.shape[-1])


def _conv_transpose(node: Node) -> int:
    # kernel (*k, filters, cin): each input element is scattered to prod(k)*filters outputs.
    k = _kernel(node)
    return _prod(node.input_shapes[0][1:]) * (k.size // k.shape[-1])


def _depthwise(node: Node) -> int:
    # kernel (*k, cin, depth_multiplier): each output element costs prod(k) MACs.
    k = _kernel(node)
    return _out_elems(node) * (k.size // (k.shape[-1] * k.shape[-2]))


def _separable(node: Node) -> int:
    dw = _kernel(node, "depthwise_kernel")
    pw = _kernel(node, "pointwise_kernel") if "pointwise_kernel" in node.weight_names else node.weights[1]
    filters = pw.shape[-1]
    positions = _out_elems(node) // filters  # output spatial positions (pointwise is 1x1, stride 1)
    return positions * dw.size + positions * pw.size


def _dense(node: Node) -> int:
    # Each output position (all leading dims) costs in*units MACs.
    return _prod(node.output_shapes[0][1:-1]) * _kernel(node).size


def _einsum_dense(node: Node) -> int:
    # MACs = output elements x product of the contracted (summed-over) kernel dims.
    eq = node.config["equation"].replace(" ", "")
    lhs, out = eq.split("->")
    ispec, kspec = lhs.split(",")
    kernel = _kernel(node)
    sizes = dict(zip(kspec, kernel.shape))
    contracted = [sizes[c] for c in kspec if c not in out]
    if "..." in eq:
        out_elems = _out_elems(node)
    else:  # output dims may be None in the recorded shape: take sizes from input and kernel
        in_shape = node.input_shapes[0]
        sizes.update({c: d for c, d in zip(ispec[1:], in_shape[1:]) if c not in sizes})
        out_elems = _prod(sizes.get(c) for c in out if c != ispec[0])
    return out_elems * _prod(contracted)


def _mha(node: Node) -> int:
    q_len = _prod(node.input_shapes[0][1:-1])
    v_len = _prod(node.input_shapes[1][1:-1]) if len(node.input_shapes) > 1 else q_len
    names = node.weight_names
    if all(f"{p}/kernel" in names for p in ("query", "key", "value", "attention_output")):
        qk, kk, vk, ok = (node.weights[names.index(f"{p}/kernel")] for p in ("query", "key", "value", "attention_output"))
    else:  # order of MultiHeadAttention.weights: (kernel[, bias]) for query, key, value, output
        step = 2 if node.config.get("use_bias", True) else 1
        qk, kk, vk, ok = node.weights[0:4 * step:step]
    heads = node.config["num_heads"]
    key_dim = node.config["key_dim"]
    value_dim = node.config.get("value_dim") or key_dim
    proj = q_len * qk.size + v_len * kk.size + v_len * vk.size + q_len * ok.size
    attn = heads * q_len * v_len * (key_dim + value_dim)  # scores + weighted sum
    return proj + attn


def _rnn(node: Node) -> int:
    # Per step: input kernel + recurrent kernel multiply-adds.
    steps = node.input_shapes[0][1] or 1
    return steps * sum(w.size for w in node.weights if w.ndim == 2)


_RULES: dict[str, Callable[[Node], int]] = {
    "Conv1D": _conv, "Conv2D": _conv, "Conv3D": _conv,
    "Conv1DTranspose": _conv_transpose, "Conv2DTranspose": _conv_transpose,
    "Conv3DTranspose": _conv_transpose,
    "DepthwiseConv1D": _depthwise, "DepthwiseConv2D": _depthwise,
    "SeparableConv1D": _separable, "SeparableConv2D": _separable,
    "Dense": _dense, "EinsumDense": _einsum_dense,
    "MultiHeadAttention": _mha,
    "SimpleRNN": _rnn, "LSTM": _rnn, "GRU": _rnn,
}


def _submodel_macs(model: keras.Model) -> tuple[int, bool]:
    """(MACs, all known) of a subclassed model, from the shapes its layers were built with.

    Its call() is Python code, so each layer with weights is counted once, on the input
    shape it was built for (a layer called twice in call() is undercounted).
    """
    total, known = 0, True
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if not layer.weights or list(layer._flatten_layers(include_self=False, recursive=False)):
            continue  # weightless, or a container whose own layers are counted
        built = list((getattr(layer, "_build_shapes_dict", None) or {}).values())
        try:
            in_shape = tuple(built[0])
            out_shape = tuple(layer.compute_output_shape(in_shape))
        except Exception:  # noqa: BLE001 - no recorded shape, or a shape this layer cannot compute from
            known = False
            continue
        names = [_weight_name(v.path, layer.name) for v in layer.weights]
        node = Node(name=layer.name, layer_name=layer.name, class_name=type(layer).__name__,
                    config=layer.get_config(), weights=[np.asarray(v.numpy()) for v in layer.weights], inputs=[],
                    output_shapes=[out_shape], input_shapes=[in_shape], layer=layer, weight_names=names)
        rule, ok = _classify(node)
        total += int(rule(node)) if rule is not None else 0
        known = known and ok
    return total, known


def _classify(node: Node) -> tuple[Optional[Callable[[Node], int]], bool]:
    """(MAC rule or None, known) for a node's class or its nearest known Keras base class."""
    if _is_bare_op(node):
        return None, True
    classes = type(node.layer).__mro__ if node.layer is not None else ()
    for name in [node.class_name] + [c.__name__ for c in classes]:
        if name in _RULES:
            return (_RULES[name] if node.weights else None), True
        if name in _ZERO_MAC:
            return None, True
    return None, False
