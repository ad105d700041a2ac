"""Per-layer-class channel rules: how channels flow through a layer and how to slice it.

Channel pruning needs two facts about every layer: which of its output channels stand
for which input channels (so coupled channels are removed together), and how to cut
its weights and config once a channel selection is made. Keeping both in one rule per
layer class keeps the dependency analysis (`channel_groups`) and the surgery
(`prune_channels`) free of layer-specific code, and lets users teach us their own
layers with `register_layer_rule`.

A *channel map* is an int array with one entry per channel of a tensor's last axis:
the id of the *unit* (an atomic prunable channel) it carries. ``None`` means the tensor
has no channel semantics (e.g. integer token ids). Rules never know about targets.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional, Sequence, Union

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from kerascompress.graph.units import UnitTable

ChannelMap = Optional[np.ndarray]
Keep = Optional[np.ndarray]  # boolean mask over a tensor's channels; None = keep all


class Freeze(Exception):
    """Raised by a rule that cannot follow channels through a node; the groups touching it are frozen."""


# ----------------------------------------------------------------------------- helpers


def weight_names(node: Any) -> list[str]:
    """Short names of the node's weights ("kernel", "bias", "gamma"...), in `node.weights` order."""
    names = list(getattr(node, "weight_names", None) or [])
    if not names and node.layer is not None:
        names = [getattr(w, "path", getattr(w, "name", "")).split("/")[-1] for w in node.layer.weights]
    if len(names) != len(node.weights):  # e.g. a layer holding no variables of its own
        names = [f"w{i}" for i in range(len(node.weights))]
    return names


def _shape(shapes: Sequence[Any], i: int = 0) -> tuple:
    s = shapes[i]
    return tuple(s) if s is not None else ()


def _rank(node: Any, i: int = 0) -> int:
    return len(_shape(node.input_shapes, i))


def _take(a: np.ndarray, keep: Keep, axis: int) -> np.ndarray:
    if keep is None:
        return a
    return np.take(a, np.flatnonzero(keep), axis=axis)


def _channels_first(node: Any) -> bool:
    return node.config.get("data_format") == "channels_first"


def _last_axis(axis: Any, rank: int) -> bool:
    axes = list(axis) if isinstance(axis, (list, tuple)) else [axis]
    return any(a in (-1, rank - 1) for a in axes)


# ----------------------------------------------------------------------------- the protocol


class LayerRule:
    """How channels flow through one layer class, and how to slice it.

    ``mixes_channels``: every output depends on every input channel through weights
    (a *consumer*: Conv, Dense); removing an input channel = dropping its weight rows.
    ``channel_agnostic``: the layer has no weights or config tied to channel counts, so
    a shared instance may carry differently pruned tensors.
    """

    mixes_channels: bool = False
    channel_agnostic: bool = False

    def propagate(self, node: Any, in_maps: list[ChannelMap], table: "UnitTable") -> list[ChannelMap]:
        """Return the channel maps of the node's outputs (or raise `Freeze`)."""
        raise NotImplementedError

    def prune(self, node: Any, in_keep: list[Keep], out_keep: list[Keep]) -> None:
        """Slice ``node.weights`` / ``node.config`` in place for the kept channels."""


class ChannelwiseRule(LayerRule):
    """Channel c out depends only on channel c in (activations, BN, pooling, padding...).

    Weights whose last axis has the channel count are sliced on it (BN, PReLU); config
    entries named in ``config_keys`` holding per-channel lists are sliced too.
    """

    def __init__(self, config_keys: Sequence[str] = (), agnostic: bool = False) -> None:
        self.config_keys = tuple(config_keys)
        self.channel_agnostic = agnostic

    def check(self, node: Any) -> None:
        """Raise `Freeze` when this node does not act channel by channel."""
        if _channels_first(node):
            raise Freeze("channels_first data format is not supported for pruning")

    def propagate(self, node, in_maps, table):
        self.check(node)
        return [in_maps[0]] * max(1, len(node.output_shapes))

    def prune(self, node, in_keep, out_keep):
        keep = out_keep[0] if out_keep else in_keep[0]
        if keep is None:
            return
        n = len(keep)
        for i, w in enumerate(node.weights):
            w = np.asarray(w)
            if w.ndim and w.shape[-1] == n:
                node.weights[i] = _take(w, keep, -1)
        for key in self.config_keys:
            v = node.config.get(key)
            if isinstance(v, (list, tuple)) and len(v) == n:
                node.config[key] = [x for x, k in zip(v, keep) if k]
            elif isinstance(v, np.ndarray) and v.shape and v.shape[-1] == n:
                node.config[key] = _take(v, keep, -1)


class BatchNormRule(ChannelwiseRule):
    def check(self, node):
        if not _last_axis(node.config.get("axis", -1), _rank(node)):
            raise Freeze("BatchNormalization over a non-channel axis")


class LayerNormRule(ChannelwiseRule):
    def check(self, node):
        if _last_axis(node.config.get("axis", -1), _rank(node)):
            raise Freeze(
                "LayerNormalization normalizes across the channel axis: removing channels would change "
                "the statistics of the kept ones"
            )

    def prune(self, node, in_keep, out_keep):  # its weights live on non-channel axes
        return


class SoftmaxRule(ChannelwiseRule):
    def check(self, node):
        if _last_axis(node.config.get("axis", -1), _rank(node)):
            raise Freeze("softmax over the channel axis mixes channels")


class ActivationRule(ChannelwiseRule):
    def __init__(self) -> None:
        super().__init__(agnostic=True)

    def check(self, node):
        act = node.config.get("activation")
        name = act if isinstance(act, str) else (act or {}).get("config", {}).get("name", "") if isinstance(act, dict) else ""
        if "softmax" in str(name):
            raise Freeze("softmax over the channel axis mixes channels")


class NormalizationRule(ChannelwiseRule):
    """keras.layers.Normalization: per-channel mean/variance in weights or config."""

    def __init__(self) -> None:
        super().__init__(config_keys=("mean", "variance"))

    def check(self, node):
        if not _last_axis(node.config.get("axis", -1), _rank(node)):
            raise Freeze("Normalization over a non-channel axis")


class RescalingRule(ChannelwiseRule):
    def __init__(self) -> None:
        super().__init__(config_keys=("scale", "offset"))


class InputRule(LayerRule):
    """Model inputs: their channels are fixed by the data and never pruned."""

    channel_agnostic = True

    def propagate(self, node, in_maps, table):
        shape = _shape(node.output_shapes)
        if len(shape) < 2 or shape[-1] is None:
            return [None]
        return [table.new(shape[-1], node.name, frozen="model input")]


class ProducerRule(LayerRule):
    """Conv1D/2D/3D, Dense, SeparableConv, Conv*Transpose, Embedding, EinsumDense: new output channels.

    ``in_axis`` / ``out_axis``: kernel axes of input and output channels;
    ``width_key``: the config entry holding the output width.
    """

    mixes_channels = True

    def __init__(self, width_key: str, in_axis: int = -2, out_axis: int = -1, kernel: str = "kernel") -> None:
        self.width_key = width_key
        self.in_axis = in_axis
        self.out_axis = out_axis
        self.kernel = kernel

    def groups(self, node: Any) -> int:
        return int(node.config.get("groups", 1) or 1)

    def out_width(self, node: Any) -> int:
        return int(node.config[self.width_key])

    def propagate(self, node, in_maps, table):
        if _channels_first(node):
            raise Freeze("channels_first data format is not supported for pruning")
        g = self.groups(node)
        width = self.out_width(node)
        if g > 1:
            # Grouped conv: channel k of every group is one unit, so groups stay equal-sized.
            m = in_maps[0]
            if m is not None:
                a = len(m) // g
                for k in range(a):
                    table.union(m[k::a][:1].repeat(g - 1), m[k + a::a])
            units = table.new_for_layer(node.layer_name, width // g, node.name)
            return [np.tile(units, g)]
        return [table.new_for_layer(node.layer_name, width, node.name)]

    def prune(self, node, in_keep, out_keep):
        names = weight_names(node)
        g = self.groups(node)
        ik, ok = in_keep[0] if in_keep else None, out_keep[0]
        if g > 1 and ik is not None:
            ik = ik[: len(ik) // g]  # identical across groups by construction
        for i, name in enumerate(names):
            w = np.asarray(node.weights[i])
            if name == self.kernel:
                w = _take(_take(w, ik, self.in_axis), ok, self.out_axis)
            elif name == "bias":
                w = _take(w, ok, -1)
            node.weights[i] = w
        if ok is not None:
            node.config[self.width_key] = int(ok.sum())


class EmbeddingRule(ProducerRule):
    mixes_channels = False

    def __init__(self) -> None:
        super().__init__("output_dim", kernel="embeddings")

    def propagate(self, node, in_maps, table):
        return [table.new_for_layer(node.layer_name, self.out_width(node), node.name)]

    def prune(self, node, in_keep, out_keep):
        super().prune(node, [None], out_keep)


class SeparableConvRule(ProducerRule):
    """Depthwise part on the input channels, then a pointwise conv creating new channels.

    Its output channels are the pointwise kernel's columns, so that is the kernel the
    channel scores read (a rule naming "kernel" here left them unscored, and pruning
    removed live channels). The depthwise part's output c*dm+k comes from input channel c,
    so an input channel owns ``depth_multiplier`` consecutive pointwise rows.
    """

    def __init__(self) -> None:
        super().__init__("filters", kernel="pointwise_kernel")

    def prune(self, node, in_keep, out_keep):
        dm = int(node.config.get("depth_multiplier", 1))
        ik, ok = in_keep[0], out_keep[0]
        for i, name in enumerate(weight_names(node)):
            w = np.asarray(node.weights[i])
            if name == "depthwise_kernel":
                w = _take(w, ik, -2)
            elif name == "pointwise_kernel":
                w = _take(_take(w, None if ik is None else np.repeat(ik, dm), -2), ok, -1)
            elif name == "bias":
                w = _take(w, ok, -1)
            node.weights[i] = w
        if ok is not None:
            node.config["filters"] = int(ok.sum())


class EinsumDenseRule(ProducerRule):
    """EinsumDense written as a Dense on the last axis ("abc,cd->abd", bias on "d"): new channels.

    Transformer blocks use this form for their feed-forward layers. Any other equation
    (heads split off, axes moved or contracted elsewhere) freezes: its output channels do
    not stand one-to-one for kernel columns.
    """

    def __init__(self) -> None:
        super().__init__("output_shape", in_axis=0, out_axis=-1)

    @staticmethod
    def check(node: Any) -> None:
        equation = str(node.config.get("equation", "")).replace(" ", "")
        lhs, _, out = equation.partition("->")
        ins, _, kernel = lhs.partition(",")
        dense_like = (
            len(kernel) == 2 and ins[-1:] == kernel[0] and kernel[1] not in ins and out == ins[:-1] + kernel[1]
        )
        if not dense_like or node.config.get("bias_axes") not in (None, "", kernel[1:]):
            raise Freeze(f"EinsumDense {equation!r} is not a dense map of the last axis")

    def out_width(self, node: Any) -> int:
        shape = node.config["output_shape"]
        return int(shape[-1] if isinstance(shape, (list, tuple)) else shape)

    def propagate(self, node, in_maps, table):
        self.check(node)
        return [table.new_for_layer(node.layer_name, self.out_width(node), node.name)]

    def prune(self, node, in_keep, out_keep):
        ik, ok = in_keep[0] if in_keep else None, out_keep[0]
        for i, name in enumerate(weight_names(node)):
            w = np.asarray(node.weights[i])
            if name == "kernel":
                w = _take(_take(w, ik, 0), ok, -1)
            elif name == "bias":
                w = _take(w, ok, -1)
            node.weights[i] = w
        if ok is not None:
            shape = node.config["output_shape"]
            kept = int(ok.sum())
            node.config["output_shape"] = (
                type(shape)(list(shape[:-1]) + [kept]) if isinstance(shape, (list, tuple)) else kept
            )


class DepthwiseRule(LayerRule):
    """Output channel c*dm+k comes from input channel c alone: in and out are coupled."""

    def propagate(self, node, in_maps, table):
        if _channels_first(node):
            raise Freeze("channels_first data format is not supported for pruning")
        dm = int(node.config.get("depth_multiplier", 1))
        return [None if in_maps[0] is None else np.repeat(in_maps[0], dm)]

    def prune(self, node, in_keep, out_keep):
        ik, ok = in_keep[0], out_keep[0]
        for i, name in enumerate(weight_names(node)):
            w = np.asarray(node.weights[i])
            if name in ("kernel", "depthwise_kernel"):
                w = _take(w, ik, -2)
            elif name == "bias":
                w = _take(w, ok, -1)
            node.weights[i] = w


class MergeRule(LayerRule):
    """Add, Subtract, Multiply, Maximum, Minimum, Average: channel c of every input is coupled.

    An input whose channel axis has size 1 is broadcast over channels and not coupled.
    """

    channel_agnostic = True

    def propagate(self, node, in_maps, table):
        full = [m for m in in_maps if m is not None and len(m) > 1]
        if any(m is None for m in in_maps) and full:
            raise Freeze("element-wise merge of a tensor without channels")
        if not full:
            return [in_maps[0]]
        n = max(len(m) for m in full)
        for m in full:
            if len(m) != n:
                raise Freeze("element-wise merge of tensors with different channel counts")
        for m in full[1:]:
            table.union(full[0], m)
        return [full[0]]


class ConcatRule(LayerRule):
    """Concatenate on the channel axis stacks the inputs' maps; on another axis it couples them."""

    channel_agnostic = True

    def propagate(self, node, in_maps, table):
        if any(m is None for m in in_maps):
            raise Freeze("concatenation of a tensor without channels")
        if _last_axis(node.config.get("axis", -1), _rank(node)):
            return [np.concatenate(in_maps)]
        return MergeRule().propagate(node, in_maps, table)


class ReshapeRule(LayerRule):
    """Flatten / Reshape: map channels through the row-major element order.

    The output's last axis keeps a channel map when each of its positions carries the
    same unit everywhere (e.g. (H, W, C) -> (H*W, C) or (C,) -> (1, 1, C)); a 1-D output
    carries one unit per element (Flatten into Dense). Anything else is frozen.
    """

    def __init__(self, agnostic: bool = False) -> None:
        self.channel_agnostic = agnostic

    def propagate(self, node, in_maps, table):
        m = in_maps[0]
        if m is None:
            raise Freeze("reshape of a tensor without channels")
        if _channels_first(node):
            raise Freeze("channels_first data format is not supported for pruning")
        s_in, s_out = _shape(node.input_shapes)[1:], _shape(node.output_shapes)[1:]
        if any(d is None for d in s_in + s_out):
            raise Freeze("reshape with unknown dimensions")
        elements = np.tile(m, int(np.prod(s_in[:-1], dtype=np.int64)))
        if len(s_out) == 1:
            return [elements]
        rows = elements.reshape(-1, s_out[-1])
        if not (rows == rows[0]).all():
            raise Freeze(f"reshape {s_in} -> {s_out} moves channels across axes")
        return [rows[0].copy()]

    def prune(self, node, in_keep, out_keep):
        if "target_shape" not in node.config or out_keep[0] is None:
            return
        s_out = _shape(node.output_shapes)[1:]
        kept = int(out_keep[0].sum())
        node.config["target_shape"] = (kept,) if len(s_out) == 1 else tuple(s_out[:-1]) + (kept,)


class FreezeRule(LayerRule):
    """A layer we do not understand: its inputs' and outputs' channels are never pruned."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def propagate(self, node, in_maps, table):
        raise Freeze(self.reason)


# ----------------------------------------------------------------------------- the registry

_CHANNELWISE = (
    "ReLU LeakyReLU ELU ThresholdedReLU Dropout SpatialDropout1D SpatialDropout2D SpatialDropout3D "
    "GaussianDropout GaussianNoise AlphaDropout ActivityRegularization Identity "
    "ZeroPadding1D ZeroPadding2D ZeroPadding3D Cropping1D Cropping2D Cropping3D "
    "UpSampling1D UpSampling2D UpSampling3D MaxPooling1D MaxPooling2D MaxPooling3D "
    "AveragePooling1D AveragePooling2D AveragePooling3D GlobalAveragePooling1D GlobalAveragePooling2D "
    "GlobalAveragePooling3D GlobalMaxPooling1D GlobalMaxPooling2D GlobalMaxPooling3D"
).split()

_RULES: dict[str, LayerRule] = {name: ChannelwiseRule(agnostic=True) for name in _CHANNELWISE}
_RULES.update(
    {
        "InputLayer": InputRule(),
        "Activation": ActivationRule(),
        "Softmax": SoftmaxRule(agnostic=True),
        "PReLU": ChannelwiseRule(),
        "BatchNormalization": BatchNormRule(),
        "LayerNormalization": LayerNormRule(),
        "Normalization": NormalizationRule(),
        "Rescaling": RescalingRule(),
        "Dense": ProducerRule("units", in_axis=0, out_axis=1),
        "EinsumDense": EinsumDenseRule(),
        "Conv1D": ProducerRule("filters"),
        "Conv2D": ProducerRule("filters"),
        "Conv3D": ProducerRule("filters"),
        "Conv1DTranspose": ProducerRule("filters", in_axis=-1, out_axis=-2),
        "Conv2DTranspose": ProducerRule("filters", in_axis=-1, out_axis=-2),
        "Conv3DTranspose": ProducerRule("filters", in_axis=-1, out_axis=-2),
        "SeparableConv1D": SeparableConvRule(),
        "SeparableConv2D": SeparableConvRule(),
        "DepthwiseConv1D": DepthwiseRule(),
        "DepthwiseConv2D": DepthwiseRule(),
        "Embedding": EmbeddingRule(),
        "Add": MergeRule(),
        "Subtract": MergeRule(),
        "Multiply": MergeRule(),
        "Maximum": MergeRule(),
        "Minimum": MergeRule(),
        "Average": MergeRule(),
        "Concatenate": ConcatRule(),
        "Flatten": ReshapeRule(agnostic=True),
        "Reshape": ReshapeRule(),
        "Lambda": FreezeRule("Lambda layer: its effect on channels is unknown"),
        "MultiHeadAttention": FreezeRule(
            "MultiHeadAttention splits channels into heads inside its projections; channels are not followed "
            "through it"
        ),
    }
)


def register_layer_rule(layer_class: Union[type, str], rule: LayerRule) -> None:
    """Teach the pruner how channels flow through ``layer_class`` (a class or its name).

    Use `ChannelwiseRule()` for a layer acting channel by channel (per-channel weights on
    the last axis are sliced), `ProducerRule("units")` for a layer creating new channels
    from all inputs, or a `LayerRule` subclass for anything else.
    """
    name = layer_class if isinstance(layer_class, str) else layer_class.__name__
    if not isinstance(rule, LayerRule):
        raise TypeError(f"rule must be a kerascompress LayerRule, got {type(rule).__name__}")
    _RULES[name] = rule


#: Keras ops applied to symbolic tensors (keras.ops.*) that act channel by channel.
_OP_BINARY = {"Add", "Subtract", "Multiply", "Maximum", "Minimum", "Divide", "TrueDivide"}
_OP_UNARY = {"Relu", "Relu6", "Sigmoid", "Tanh", "Silu", "Swish", "HardSigmoid", "HardSwish", "Gelu", "Elu",
             "Selu", "LeakyRelu", "Softplus", "Abs", "Exp", "Log", "Sqrt", "Square", "Negative", "Absolute"}


def _op_rule(node: Any) -> LayerRule:
    """Rule for a bare Keras op node: element-wise ops only, with tensors or scalars as operands."""
    import keras

    def scalars_only(struct: Any) -> bool:
        leaves = keras.tree.flatten(struct)
        return all(type(x).__name__ == "Slot" or isinstance(x, (int, float, bool, type(None), str)) for x in leaves)

    args, kwargs = node.call_structure() if hasattr(node, "call_structure") else ((), {})
    if scalars_only(args) and scalars_only(kwargs):
        if node.class_name in _OP_BINARY:
            return MergeRule()
        if node.class_name in _OP_UNARY:
            return ChannelwiseRule(agnostic=True)
    return FreezeRule(f"Keras op {node.class_name!r} on symbolic tensors: its effect on channels is unknown")


def rule_for(node: Any) -> LayerRule:
    """The rule of the node's layer class, or a freezing rule naming the unknown class."""
    import keras

    if node.layer is not None and not isinstance(node.layer, keras.layers.Layer) and node.class_name != "InputLayer":
        return _op_rule(node)
    if isinstance(node.layer, keras.Model):
        return FreezeRule(
            f"{node.layer_name} is a subclassed model ({node.class_name}): its call() is Python code, so channels "
            f"through it are not followed"
        )
    rule = _RULES.get(node.class_name)
    if rule is None:
        return FreezeRule(f"unknown layer class {node.class_name!r}: register a rule with register_layer_rule")
    return rule
