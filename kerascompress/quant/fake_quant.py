"""Fake quantization placed where the TFLite converter quantizes, by graph surgery.

The TFLite int8 scheme fixes where rounding happens: weights per output channel,
symmetric (Conv2D; Dense per tensor, as the converter cannot keep a per-channel axis
through the FullyConnected transpose); activations per tensor, asymmetric, *after*
BatchNormalization (folded into the preceding Conv/Dense) and after a fused ReLU/ReLU6;
nothing between ops that keep their input scale (pooling max, reshape, flatten,
dropout); nothing after softmax/sigmoid/tanh, whose int8 output scale is fixed.

`fake_quant_model` rebuilds a Functional model with that placement, for the whole model
(QAT) or for chosen layers only (sensitivity analysis). The fake-quant ops are
``tf.quantization.fake_quant_with_min_max_vars[_per_channel]``, which the converter reads
as the quantization parameters of the tensors they produce, so an int8 TFLite of a
fake-quantized model computes what the model computed in training.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterable, Optional, Sequence

import keras
import numpy as np
from keras import layers

from kerascompress.errors import UnsupportedModelError
from kerascompress.models.copy import copy_model
from kerascompress.quant.calibration import RangeCollector, quantize_weights

#: Layers that keep their input's scale in int8 (no requantization after them).
SCALE_PRESERVING = (
    layers.MaxPooling1D, layers.MaxPooling2D, layers.MaxPooling3D, layers.GlobalMaxPooling1D,
    layers.GlobalMaxPooling2D, layers.Flatten, layers.Reshape, layers.Dropout, layers.SpatialDropout1D,
    layers.SpatialDropout2D, layers.ZeroPadding2D, layers.Cropping2D, layers.Identity, layers.GaussianNoise,
    layers.GaussianDropout, layers.ActivityRegularization,
)
#: Activations whose int8 output range the converter fixes itself.
FIXED_RANGE_ACTIVATIONS = ("softmax", "sigmoid", "tanh", "log_softmax")


# ----------------------------------------------------------------------------- layers


@keras.saving.register_keras_serializable(package="kerascompress")
class FakeQuant(layers.Layer):
    """Per-tensor asymmetric 8-bit fake quantization of an activation.

    ``mode``: "calibrate" passes values through and feeds them to ``collector`` (eager
    only); "quantize" rounds to the range in the ``min``/``max`` variables, which in
    training follow the batch ranges by an exponential moving average (``ema_decay``).
    """

    def __init__(self, ema_decay: float = 0.99, mode: str = "quantize", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ema_decay = float(ema_decay)
        self.mode = mode
        self.collector: Optional[Any] = None

    def build(self, input_shape: Any) -> None:
        self.range_min = self.add_weight(shape=(), initializer="zeros", trainable=False, name="min")
        self.range_max = self.add_weight(shape=(), initializer="ones", trainable=False, name="max")

    def call(self, x: Any, training: Optional[bool] = None) -> Any:
        import tensorflow as tf

        if self.mode == "off":
            return x
        if self.mode == "calibrate":
            if self.collector is not None:
                self.collector.update(keras.ops.convert_to_numpy(x))
            return x
        if training:
            lo, hi = _global_range(tf.minimum(tf.reduce_min(x), 0.0), tf.maximum(tf.reduce_max(x), 0.0))
            d = self.ema_decay
            self.range_min.assign(d * self.range_min + (1.0 - d) * lo)
            self.range_max.assign(d * self.range_max + (1.0 - d) * hi)
        return tf.quantization.fake_quant_with_min_max_vars(
            x, tf.minimum(self.range_min, 0.0), tf.maximum(self.range_max, 1e-6), num_bits=8, narrow_range=False
        )

    def set_range(self, lo: float, hi: float) -> None:
        self.range_min.assign(float(min(lo, 0.0)))
        self.range_max.assign(float(max(hi, lo + 1e-6, 1e-6)))

    def get_range(self) -> tuple[float, float]:
        return float(self.range_min.numpy()), float(self.range_max.numpy())

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "ema_decay": self.ema_decay, "mode": self.mode}


def _global_range(lo: Any, hi: Any) -> tuple[Any, Any]:
    """The batch range over every replica's shard (training under a tf.distribute strategy).

    Each replica updates its own copy of the range variables; with its own shard's range
    the copies would drift apart, and the range would be that of a fraction of the batch.
    """
    import tensorflow as tf

    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return lo, hi
    smallest = tf.reduce_min(ctx.all_gather(tf.stack([lo, -hi])[None], axis=0), axis=0)
    return smallest[0], -smallest[1]


def _fake_quant_weights(kernel: Any, per_channel: bool) -> Any:
    """Symmetric narrow-range 8-bit rounding (scale = max|w| / 127), straight-through gradient."""
    import tensorflow as tf

    if per_channel:
        axes = list(range(len(kernel.shape) - 1))
        m = tf.stop_gradient(tf.maximum(tf.reduce_max(tf.abs(kernel), axis=axes), 1e-8))
        return tf.quantization.fake_quant_with_min_max_vars_per_channel(kernel, -m, m, num_bits=8, narrow_range=True)
    m = tf.stop_gradient(tf.maximum(tf.reduce_max(tf.abs(kernel)), 1e-8))
    return tf.quantization.fake_quant_with_min_max_vars(kernel, -m, m, num_bits=8, narrow_range=True)


@keras.saving.register_keras_serializable(package="kerascompress")
class QuantConv2D(layers.Conv2D):
    """Conv2D whose kernel is fake-quantized per output channel (as TFLite stores it)."""

    def convolution_op(self, inputs: Any, kernel: Any) -> Any:
        return super().convolution_op(inputs, _fake_quant_weights(kernel, per_channel=True))


@keras.saving.register_keras_serializable(package="kerascompress")
class QuantDense(layers.Dense):
    """Dense whose kernel is fake-quantized (per tensor: the converter's FullyConnected
    transpose does not keep a per-channel axis of a fake-quantized kernel)."""

    def call(self, inputs: Any, training: Optional[bool] = None) -> Any:
        y = keras.ops.matmul(inputs, _fake_quant_weights(self.kernel, per_channel=False))
        if self.use_bias:
            y = y + self.bias
        return self.activation(y) if self.activation is not None else y


# ---------------------------------------------------------------------- graph reading


def graph_model(model: keras.Model) -> keras.Model:
    """The Functional graph behind a Sequential/Functional model; refuses subclassed ones."""
    if isinstance(model, keras.Sequential):
        fn = getattr(model, "_functional", None)
        if fn is None:
            raise UnsupportedModelError("this Sequential model has no Input; build it with keras.Input first")
        return fn
    if hasattr(model, "_nodes_by_depth") and getattr(model, "inputs", None):
        return model
    raise UnsupportedModelError(
        f"fake quantization needs a Functional or Sequential Keras model; {type(model).__name__} is subclassed"
    )


@dataclasses.dataclass
class _NodeInfo:
    node: Any
    layer: Any
    producers: list[int]  # indices of producing nodes (-1 for model inputs)
    consumers: list[int] = dataclasses.field(default_factory=list)


def _nodes(gm: keras.Model) -> tuple[list[_NodeInfo], dict[int, int]]:
    """Call nodes in execution order with producer/consumer links; tensor id -> node index."""
    order = []
    for depth in sorted(gm._nodes_by_depth, reverse=True):
        for node in gm._nodes_by_depth[depth]:
            if node.operation is not None and not node.is_input:
                order.append(node)
    produced: dict[int, int] = {}
    infos: list[_NodeInfo] = []
    for i, node in enumerate(order):
        for t in node.outputs:
            produced[id(t)] = i
    for i, node in enumerate(order):
        prods = [produced.get(id(t), -1) for t in node.input_tensors]
        infos.append(_NodeInfo(node, node.operation, prods))
    for i, info in enumerate(infos):
        for p in info.producers:
            if p >= 0:
                infos[p].consumers.append(i)
    return infos, produced


def _is_relu_like(layer: Any) -> bool:
    if isinstance(layer, layers.ReLU):
        cfg = layer.get_config()
        return not cfg.get("negative_slope") and not cfg.get("threshold") and cfg.get("max_value") in (None, 6, 6.0)
    if isinstance(layer, layers.Activation):
        return _activation_name(layer.activation) in ("relu", "relu6")
    return False


def _activation_name(fn: Any) -> str:
    return getattr(fn, "__name__", str(fn)).split(".")[-1]


def _fixed_range(layer: Any) -> bool:
    if isinstance(layer, layers.Softmax):
        return True
    if isinstance(layer, layers.Activation):
        return _activation_name(layer.activation) in FIXED_RANGE_ACTIVATIONS
    return False


def _foldable_bn(layer: Any) -> bool:
    return isinstance(layer, layers.BatchNormalization) and layer.axis in (-1, len(layer.input.shape) - 1)


def is_weighted(layer: Any) -> bool:
    """Conv2D / Dense: the layers whose kernels this module fake-quantizes itself."""
    if type(layer) in (layers.Conv2D, QuantConv2D):
        return layer.groups == 1 and layer.data_format == "channels_last"
    return type(layer) in (layers.Dense, QuantDense)


def quantizable_layers(model: keras.Model) -> list[str]:
    """Names of the layers with int8 weights in a converted model, in execution order."""
    gm = graph_model(model)
    infos, _ = _nodes(gm)
    names: list[str] = []
    for info in infos:
        layer = info.layer
        if is_weighted(layer) or (_weights(layer) and not isinstance(layer, (layers.BatchNormalization, FakeQuant))
                                  and not isinstance(layer, keras.Model)):
            if layer.name not in names:
                names.append(layer.name)
    return names


@dataclasses.dataclass
class Group:
    """A weighted layer call plus the BatchNormalization and activation fused into it."""

    head: int
    bn: Optional[int] = None
    act: Optional[int] = None

    @property
    def tail(self) -> int:
        return self.act if self.act is not None else self.bn if self.bn is not None else self.head


def _groups(infos: list[_NodeInfo], gm: keras.Model) -> dict[int, Group]:
    """Fusion groups keyed by the head node: Conv/Dense [+ BN] [+ ReLU/ReLU6]."""
    output_nodes = {id(t) for t in gm.outputs}
    counts: dict[int, int] = {}
    for info in infos:
        counts[id(info.layer)] = counts.get(id(info.layer), 0) + 1

    def sole_consumer(i: int) -> Optional[int]:
        info = infos[i]
        if len(info.consumers) != 1 or any(id(t) in output_nodes for t in info.node.outputs):
            return None
        c = info.consumers[0]
        return c if counts[id(infos[c].layer)] == 1 and len(infos[c].producers) == 1 else None

    groups: dict[int, Group] = {}
    for i, info in enumerate(infos):
        layer = info.layer
        if not is_weighted(layer):
            continue
        g = Group(i)
        linear = _activation_name(layer.activation) == "linear"
        nxt = sole_consumer(i) if linear else None
        if nxt is not None and _foldable_bn(infos[nxt].layer):
            g.bn = nxt
            nxt = sole_consumer(nxt)
        if linear and nxt is not None and _is_relu_like(infos[nxt].layer):
            g.act = nxt
        groups[i] = g
    return groups


# ------------------------------------------------------------------------ rebuilding


def _fold(layer: Any, bn: Optional[Any], act: Optional[Any], quantize: bool) -> Any:
    """A new Conv2D/Dense (quantized or not) computing layer -> bn -> act in one op."""
    cfg = layer.get_config()
    cfg.pop("build_config", None)
    cfg.pop("quantization_config", None)
    cfg["name"] = layer.name
    kernel = np.asarray(layer.kernel.numpy())
    bias = np.asarray(layer.bias.numpy()) if layer.use_bias else np.zeros(kernel.shape[-1], kernel.dtype)
    if bn is not None:
        gamma = bn.gamma.numpy() if bn.scale else np.ones_like(bias)
        beta = bn.beta.numpy() if bn.center else np.zeros_like(bias)
        factor = gamma / np.sqrt(bn.moving_variance.numpy() + bn.epsilon)
        kernel = kernel * factor
        bias = (bias - bn.moving_mean.numpy()) * factor + beta
    if act is not None:
        cfg["activation"] = "relu6" if _relu6(act) else "relu"
    cfg["use_bias"] = True
    conv = isinstance(layer, layers.Conv2D)
    cls = (QuantConv2D if quantize else layers.Conv2D) if conv else (QuantDense if quantize else layers.Dense)
    new = cls.from_config(cfg)
    new.build(layer.input.shape)
    new.set_weights([kernel.astype(np.float32), bias.astype(np.float32)])
    return new


def _relu6(layer: Any) -> bool:
    if isinstance(layer, layers.ReLU):
        return layer.get_config().get("max_value") in (6, 6.0)
    return _activation_name(layer.activation) == "relu6"


def _split_activation(layer: Any) -> tuple[dict, Optional[str]]:
    """(config without a non-ReLU activation, that activation's name or None)."""
    name = _activation_name(layer.activation)
    if name in ("linear", "relu", "relu6"):
        return {}, None
    return {"activation": "linear"}, name


@dataclasses.dataclass
class FakeQuantModel:
    """A rebuilt model plus where its fake-quant layers sit.

    ``activation_quantizers`` maps a FakeQuant layer name to the Keras layer whose
    output (or, for ``<layer>:input``, whose input) it quantizes.
    """

    model: keras.Model
    activation_quantizers: dict[str, str]
    quantized_layers: list[str]

    def quantizers(self) -> list[FakeQuant]:
        return [self.model.get_layer(n) for n in self.activation_quantizers]

def fake_quant_model(
    model: keras.Model,
    layers_to_quantize: Optional[Iterable[str]] = None,
    fold_batchnorm: bool = True,
    name: Optional[str] = None,
) -> FakeQuantModel:
    """Rebuild ``model`` with fake quantization where the TFLite converter quantizes.

    ``layers_to_quantize=None`` quantizes the whole model (every activation tensor and
    every Conv2D/Dense kernel; other weighted layers keep float weights, which the
    converter quantizes from their values). A set of layer names quantizes just those
    layers: their kernels, their input tensors and their (fused) output tensors, the
    way that layer alone sees int8 in a converted model. ``model`` is not modified;
    layers not rebuilt are shared with it, so train only a whole-model result, which
    rebuilds every weighted layer (use `kerascompress.models.copy.copy_model` first otherwise).
    """
    gm = graph_model(model)
    infos, produced = _nodes(gm)
    whole = layers_to_quantize is None
    chosen = None if whole else set(layers_to_quantize)
    if chosen is not None:
        known = {info.layer.name for info in infos}
        unknown = sorted(chosen - known)
        if unknown:
            raise UnsupportedModelError(f"unknown layer name(s) {unknown}; the model's layers are {sorted(known)}")
    groups = _groups(infos, gm) if fold_batchnorm else {i: Group(i) for i, f in enumerate(infos) if is_weighted(f.layer)}
    absorbed = {}
    for g in groups.values():
        if whole or infos[g.head].layer.name in chosen:
            for j in (g.bn, g.act):
                if j is not None:
                    absorbed[j] = g.head
    output_ids = {id(t) for t in gm.outputs}
    quantizers: dict[str, str] = {}
    used_names: set[str] = {info.layer.name for info in infos}
    qlayers: list[str] = []

    def new_fq(base: str, owner: str) -> FakeQuant:
        n, k = f"{base}_fq", 1
        while n in used_names:
            k += 1
            n = f"{base}_fq{k}"
        used_names.add(n)
        quantizers[n] = owner
        return FakeQuant(name=n)

    def needs_output_fq(i: int) -> bool:
        """Whole-model mode: does node i's output tensor get its own quantizer?"""
        info = infos[i]
        layer = info.layer
        if isinstance(layer, SCALE_PRESERVING) or _fixed_range(layer):
            return False
        if is_weighted(layer) and _split_activation(layer)[1] in FIXED_RANGE_ACTIVATIONS:
            return False  # quantized before the activation instead
        if len(info.consumers) == 1 and not any(id(t) in output_ids for t in info.node.outputs):
            c = infos[info.consumers[0]]
            if _is_relu_like(c.layer) and len(c.producers) == 1:
                return False  # the ReLU is fused: quantize after it
        return True

    tensors: dict[int, Any] = {}
    new_inputs = []
    for t in gm.inputs:
        inp = keras.Input(shape=tuple(t.shape[1:]), dtype=t.dtype, name=getattr(t, "name", None))
        new_inputs.append(inp)
        x = inp
        if whole and str(t.dtype).startswith("float"):
            x = new_fq(inp.name or "input", f"{inp.name}:input")(x)
        tensors[id(t)] = x
    for i, info in enumerate(infos):
        node, layer = info.node, info.layer
        alone = not whole and layer.name in chosen and i not in absorbed
        local = tensors
        if alone:  # this layer alone: quantize its inputs as its int8 kernel reads them
            local = dict(tensors)
            for k, t in enumerate(node.input_tensors):
                if str(t.dtype).startswith("float"):
                    local[id(t)] = new_fq(f"{layer.name}_input{k if k else ''}", f"{layer.name}:input")(tensors[id(t)])
        args, kwargs = node.arguments.fill_in(local)
        if i in absorbed:  # BN / ReLU folded into the group head: pass the head's output on
            outs = args[0]
        elif i in groups and (whole or layer.name in chosen):
            g = groups[i]
            head = _fold(layer, infos[g.bn].layer if g.bn is not None else None,
                         infos[g.act].layer if g.act is not None else None, quantize=True)
            overrides, post_act = _split_activation(head)
            if overrides:
                cfg = head.get_config()
                cfg.update(overrides)
                weights = head.get_weights()
                head = type(head).from_config(cfg)
                head.build(layer.input.shape)
                head.set_weights(weights)
            qlayers.append(layer.name)
            y = head(args[0])
            tail_layer = infos[g.tail].layer
            if not whole or post_act is not None or needs_output_fq(g.tail):
                y = new_fq(tail_layer.name, tail_layer.name)(y)
            if post_act is not None:
                y = layers.Activation(post_act, name=_fresh(f"{layer.name}_{post_act}", used_names))(y)
            outs = y
        elif alone:
            op = _rounded_copy(layer) if _weights(layer) else layer
            flat = keras.tree.flatten(op(*args, **kwargs))
            if _weights(layer):
                qlayers.append(layer.name)
            outs = [new_fq(layer.name, layer.name)(o) if str(o.dtype).startswith("float") and not _fixed_range(layer)
                    else o for o in flat]
        else:
            outs = layer(*args, **kwargs)
            if whole and needs_output_fq(i) and all(str(getattr(o, "dtype", "")).startswith("float")
                                                    for o in keras.tree.flatten(outs)):
                flat = keras.tree.flatten(outs)
                if len(flat) == 1:
                    outs = new_fq(layer.name, layer.name)(flat[0])
                if _weights(layer) and not isinstance(layer, (layers.BatchNormalization, keras.Model)):
                    qlayers.append(layer.name)
        for t, y in zip(node.outputs, keras.tree.flatten(outs)):
            tensors[id(t)] = y
    outputs = [tensors[id(t)] for t in gm.outputs]
    out_struct = outputs[0] if len(outputs) == 1 else outputs
    new = keras.Model(new_inputs if len(new_inputs) > 1 else new_inputs[0], out_struct,
                      name=name or f"{model.name}_fakequant")
    return FakeQuantModel(new, quantizers, qlayers)


def _rounded_copy(layer: Any) -> Any:
    """A copy of ``layer`` whose kernel-like weights sit on their int8 grid (static)."""

    cfg = layer.get_config()
    cfg.pop("build_config", None)
    copy = type(layer).from_config(cfg)
    copy.build(layer.input.shape)
    axis = 2 if isinstance(layer, layers.DepthwiseConv2D) else -1
    copy.set_weights([quantize_weights(w, True, axis) if w.ndim >= 2 else w for w in layer.get_weights()])
    return copy


def _weights(layer: Any) -> list:
    """A layer's weights; [] for plain Keras ops (keras.ops.* calls in a Functional graph)."""
    return list(getattr(layer, "weights", None) or [])


def unbalance_channel(model: keras.Model, producer: str, consumer: str, channel: int = 0,
                      factor: float = 300.0) -> keras.Model:
    """A copy of ``model`` computing the same function with one channel ``factor`` times larger.

    Scales output ``channel`` of ``producer`` (a Conv2D/Dense, or a BatchNormalization,
    followed by nothing but ReLU on the way to ``consumer``) by ``factor`` and the matching input
    weights of ``consumer`` by 1/factor. ReLU commutes with positive scaling, so float
    outputs are unchanged, but the shared per-tensor activation range is now dominated by
    one channel - the unbalanced channel ranges real networks show (the reason for
    cross-layer equalization). Used to build honest models where plain int8 PTQ fails.
    """

    copy = copy_model(model)
    p, c = copy.get_layer(producer), copy.get_layer(consumer)
    pw = p.get_weights()
    if isinstance(p, layers.BatchNormalization):  # scale gamma and beta: the BN output channel
        for i in range(int(p.scale) + int(p.center)):
            pw[i][channel] *= factor
    else:
        pw[0][..., channel] *= factor
        if len(pw) > 1:
            pw[1][channel] *= factor
    p.set_weights(pw)
    cw = c.get_weights()
    cw[0][..., channel, :] /= factor
    c.set_weights(cw)
    return copy


def _fresh(base: str, used: set[str]) -> str:
    n, k = base, 1
    while n in used:
        k += 1
        n = f"{base}_{k}"
    used.add(n)
    return n


def calibrate(fq: FakeQuantModel, samples: Any, method: str = "minmax", batch_size: int = 64,
              **method_args: Any) -> dict[str, tuple[float, float]]:
    """Set every quantizer's range from ``samples`` with a `calibration` method; returns them."""

    qs = fq.quantizers()
    for q in qs:
        q.mode = "calibrate"
        q.collector = RangeCollector(method, **method_args)
    try:
        n = len(samples[0]) if isinstance(samples, (list, tuple)) else len(samples)
        for s in range(0, n, batch_size):
            batch = [a[s:s + batch_size] for a in samples] if isinstance(samples, (list, tuple)) else samples[s:s + batch_size]
            fq.model(batch, training=False)
        ranges = {}
        for q in qs:
            lo, hi = q.collector.range()
            q.set_range(lo, hi)
            ranges[q.name] = q.get_range()
    finally:
        for q in qs:
            q.mode = "quantize"
            q.collector = None
    return ranges


def predict(model: keras.Model, x: Any, batch_size: int = 256) -> np.ndarray:
    """Eager batched inference (no tf.function compile per rebuilt model)."""
    n = len(x[0]) if isinstance(x, (list, tuple)) else len(x)
    outs = []
    for s in range(0, n, batch_size):
        batch = [a[s:s + batch_size] for a in x] if isinstance(x, (list, tuple)) else x[s:s + batch_size]
        y = model(batch, training=False)
        outs.append(keras.ops.convert_to_numpy(keras.tree.flatten(y)[0]))
    return np.concatenate(outs)


__all__: Sequence[str] = (
    "FakeQuant", "QuantConv2D", "QuantDense", "FakeQuantModel", "fake_quant_model", "calibrate",
    "quantizable_layers", "predict", "graph_model", "is_weighted",
)
_ = Callable  # typing re-export guard
