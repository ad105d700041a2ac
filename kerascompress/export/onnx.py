"""Keras 3 model -> ONNX (via tf2onnx), with its precision written into the graph.

The ONNX file is what TensorRT builds an engine from, and TensorRT 11 takes each
tensor's precision from the graph. So `to_onnx` writes float32, FP16, INT8 (Q/DQ) or a
per-layer mix as the `PrecisionPlan` says, then checks the result with the ONNX checker
and with onnxruntime against Keras before returning it: the error is part of the result.
"""
from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence, Union

import numpy as np

from kerascompress.errors import (
    ConfigError,
    DataError,
    ExportError,
    UnsupportedModelError,
)
from kerascompress.export import onnx_precision as op
from kerascompress.fileio import write_atomic
from kerascompress.quant.plan import PrecisionPlan
from kerascompress.runtime.onnx_runner import OnnxModel

MIN_OPSET = 13  # per-channel QuantizeLinear/DequantizeLinear
MAX_OPSET = 18  # the newest tf2onnx 1.17 writes

ArrayOrList = Union[np.ndarray, Sequence[np.ndarray], Mapping[str, np.ndarray]]


@dataclasses.dataclass
class OnnxArtifact:
    """An ONNX export and how closely it matches its Keras source.

    ``max_abs_error`` is the largest absolute difference between onnxruntime and Keras
    over all outputs on ``sample_count`` sample inputs; ``relative_error`` divides it by
    the largest absolute Keras output, so it compares across models.
    """

    model_bytes: bytes
    path: Path | None
    opset: int
    precision: str
    input_names: list[str]
    output_names: list[str]
    max_abs_error: float
    mean_abs_error: float
    relative_error: float
    per_output_max_abs_error: list[float]
    sample_count: int
    node_layers: dict[str, str] = dataclasses.field(default_factory=dict, repr=False)
    quantized_nodes: list[str] = dataclasses.field(default_factory=list, repr=False)
    fp16_nodes: list[str] = dataclasses.field(default_factory=list, repr=False)
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def size_bytes(self) -> int:
        return len(self.model_bytes)

    def load(self) -> Any:
        """The graph as an ``onnx.ModelProto``."""
        import onnx

        return onnx.load_from_string(self.model_bytes)


# ----------------------------------------------------------------------------- inputs


def _keras_inputs(model: Any) -> list[Any]:
    inputs = getattr(model, "inputs", None)
    if not inputs:
        raise UnsupportedModelError(
            "the model has no defined inputs (a subclassed model that was never built?); "
            "export a Functional or Sequential model, or call it once on data first"
        )
    return list(inputs)


def _input_names(model: Any) -> list[str]:
    names = []
    for i, t in enumerate(_keras_inputs(model)):
        name = re.sub(r"[^A-Za-z0-9_.\-]", "_", str(getattr(t, "name", "") or f"input_{i}"))
        names.append(name if name not in names else f"{name}_{i}")
    return names


def _as_list(x: ArrayOrList, names: Sequence[str]) -> list[np.ndarray]:
    if isinstance(x, Mapping):
        try:
            return [np.asarray(x[n]) for n in names]
        except KeyError as err:
            raise DataError(f"input {err} missing; the model takes {list(names)}") from None
    if isinstance(x, np.ndarray) or not isinstance(x, (list, tuple)):
        return [np.asarray(x)]
    return [np.asarray(a) for a in x]


def _strip_labels(item: Any, n_inputs: int) -> Any:
    """(x, y) or (x, y, w) -> x; a bare x is returned as is."""
    if isinstance(item, tuple) and len(item) in (2, 3):
        if n_inputs == 1 or isinstance(item[0], (tuple, list, dict)):
            return item[0]
    return item


def _from_dataset(data: Any, n_inputs: int, limit: int) -> list[list[np.ndarray]]:
    """Batches (each a list of per-input arrays) from a tf.data.Dataset or arrays."""
    try:
        import tensorflow as tf

        is_ds = isinstance(data, tf.data.Dataset)
    except Exception:  # pragma: no cover
        is_ds = False
    items = data if is_ds else [data]
    batches: list[list[np.ndarray]] = []
    count = 0
    for item in items:
        item = _strip_labels(item, n_inputs)
        if isinstance(item, dict):
            arrays = [np.asarray(v) for v in item.values()]
        elif isinstance(item, (tuple, list)):
            arrays = [np.asarray(v) for v in item]
        else:
            arrays = [np.asarray(item)]
        if arrays[0].ndim == 0:
            raise DataError("calibration data yields scalars; give batched arrays (dataset.batch(n))")
        batches.append(arrays)
        count += len(arrays[0])
        if count >= limit:
            break
    return batches


def _calibration_batches(model: Any, data: Any, limit: int = 256, batch: int = 16) -> list[list[np.ndarray]]:
    """Calibration data as batches of at most ``batch`` samples, ``limit`` samples in all."""
    n_in = len(_keras_inputs(model))
    raw = _from_dataset(data, n_in, limit)
    out: list[list[np.ndarray]] = []
    total = 0
    for arrays in raw:
        if len(arrays) != n_in:
            raise DataError(f"calibration data has {len(arrays)} inputs per sample; the model takes {n_in}")
        n = len(arrays[0])
        for s in range(0, n, batch):
            if total >= limit:
                return out
            take = min(batch, limit - total)
            out.append([np.asarray(a[s : s + take], dtype=np.float32) for a in arrays])
            total += len(out[-1][0])
    return out


def sample_inputs(model: Any, batch: int = 4, seed: int = 0) -> list[np.ndarray]:
    """Random inputs (uniform in [-1, 1]) of the model's input shapes, for fidelity checks."""
    rng = np.random.default_rng(seed)
    arrays = []
    for t in _keras_inputs(model):
        dims = list(t.shape)[1:]
        if any(d is None for d in dims):
            raise DataError(
                f"input {t.name!r} has an unknown dimension ({tuple(t.shape)}); "
                "pass sample_inputs= with real arrays"
            )
        dtype = np.dtype(getattr(t, "dtype", "float32") or "float32")
        if np.issubdtype(dtype, np.floating):
            arrays.append(rng.uniform(-1.0, 1.0, size=[batch] + dims).astype(np.float32))
        else:
            arrays.append(rng.integers(0, 2, size=[batch] + dims).astype(dtype))
    return arrays


def _keras_outputs(model: Any, xs: list[np.ndarray]) -> list[np.ndarray]:
    import keras

    arg: Any = xs[0] if len(xs) == 1 else xs
    if isinstance(getattr(model, "input", None), dict):
        arg = dict(zip([t.name for t in model.inputs], xs))
    out = model(arg, training=False)
    return [np.asarray(keras.ops.convert_to_numpy(o), dtype=np.float32) for o in keras.tree.flatten(out)]


# ----------------------------------------------------------------------------- conversion


def _convert(model: Any, opset: int) -> Any:
    """Plain float32 conversion with tf2onnx; input names are the Keras input names."""
    import tensorflow as tf
    import tf2onnx

    names = _input_names(model)
    specs = []
    for t, name in zip(_keras_inputs(model), names):
        shape = [None] + list(t.shape)[1:]
        specs.append(tf.TensorSpec(shape, tf.as_dtype(getattr(t, "dtype", "float32") or "float32"), name=name))
    as_dict = isinstance(getattr(model, "input", None), dict)
    keras_names = [t.name for t in model.inputs]

    @tf.function(input_signature=specs, autograph=False)
    def serve(*args):
        if as_dict:
            return model(dict(zip(keras_names, args)), training=False)
        return model(list(args) if len(args) > 1 else args[0], training=False)

    try:
        proto, _ = tf2onnx.convert.from_function(serve, input_signature=specs, opset=opset,
                                                 custom_op_handlers={"Erfc": (_erfc_as_one_minus_erf, [])})
    except Exception as err:
        raise ExportError(
            f"tf2onnx could not convert the model at opset {opset}: {str(err)[:500]}. "
            "Custom ops without an ONNX equivalent are a known cause"
        ) from err
    _rename_outputs(proto, _output_names(model))
    return proto


def _erfc_as_one_minus_erf(ctx: Any, node: Any, name: str, args: Any) -> None:
    """tf2onnx has no Erfc (exact GELU in attention blocks computes with it): rewrite it as 1 - Erf(x).

    Exact for GELU's use, 0.5 * x * erfc(-x / sqrt(2)): where erfc is tiny, x is large and
    negative and the product stays within float32 rounding of 0.
    """
    from tf2onnx import utils

    erf = ctx.make_node("Erf", [node.input[0]])
    dtype = utils.map_onnx_to_numpy_type(ctx.get_dtype(node.input[0]))
    one = ctx.make_const(utils.make_name(f"{node.name}_one"), np.array(1, dtype=dtype))
    node.type = "Sub"
    ctx.replace_inputs(node, [one.output[0], erf.output[0]])


def _output_names(model: Any) -> list[str] | None:
    names = list(getattr(model, "output_names", None) or [])
    if len(names) != len(set(names)):
        return None
    return names


def _rename_outputs(proto: Any, names: list[str] | None) -> None:
    """Give graph outputs the Keras output names (tf2onnx calls them Identity:0 ...)."""
    g = proto.graph
    if not names or len(names) != len(g.output):
        return
    taken = {t for n in g.node for t in list(n.input) + list(n.output)} | {i.name for i in g.input}
    taken |= {i.name for i in g.initializer}
    if any(n in taken for n in names):
        return
    mapping = {o.name: n for o, n in zip(g.output, names)}
    for node in g.node:
        for i, t in enumerate(node.output):
            if t in mapping:
                node.output[i] = mapping[t]
        for i, t in enumerate(node.input):
            if t in mapping:
                node.input[i] = mapping[t]
    for o in g.output:
        o.name = mapping.get(o.name, o.name)


# ----------------------------------------------------------------------------- layer mapping


def _all_layers(model: Any) -> list[Any]:
    out = []
    for layer in getattr(model, "layers", []):
        out.append(layer)
        if getattr(layer, "layers", None):
            out.extend(_all_layers(layer))
    return out


def _resolve_component(component: str, names: set[str]) -> str | None:
    """The Keras layer whose TF name scope is ``component``.

    Keras 3 enters each layer's TF name scope such that TF makes it unique with a numeric
    suffix ("conv1" -> "conv1_1"; a second layer literally named "conv1_1" becomes
    "conv1_1_2"), so a suffixed match on the longest layer name wins over an exact one.
    """
    m = re.fullmatch(r"(.+)_(\d+)", component)
    if m and m.group(1) in names:
        return m.group(1)
    if component in names:
        return component
    return None


def onnx_node_layers(proto: Any, model: Any) -> dict[str, str]:
    """Map each ONNX node name to the Keras layer it computes ('' when it is glue).

    tf2onnx keeps TF op names ("net_1/conv1_1/convolution"), which carry the Keras layer
    scope; the deepest scope that names a layer wins. A compute node whose weight input
    is named after another layer (a BatchNormalization folded into its Conv keeps the
    BN's op name) belongs to the layer that owns the weight.
    """
    names = {layer.name for layer in _all_layers(model)}

    def from_name(name: str) -> str:
        found = ""
        for comp in name.split("/")[:-1] if "/" in name else []:
            layer = _resolve_component(comp, names)
            if layer is not None:
                found = layer
        return found

    mapping: dict[str, str] = {}
    for node in proto.graph.node:
        layer = from_name(node.name)
        if node.op_type in ("Conv", "ConvTranspose", "MatMul", "Gemm") and len(node.input) > 1:
            owner = from_name(node.input[1])
            if owner:
                layer = owner
        mapping[node.name] = layer
    return mapping


def _nodes_of(mapping: Mapping[str, str], layers: Iterable[str]) -> list[str]:
    wanted = set(layers)
    return [n for n, layer in mapping.items() if layer in wanted]


# ----------------------------------------------------------------------------- public API


def _check_plan(plan: PrecisionPlan, model: Any) -> dict[str, str]:
    names = {layer.name for layer in _all_layers(model)}
    if plan.mode == "dynamic":
        raise ConfigError(
            "precision 'dynamic' (int8 weights, float compute) has no TensorRT form; "
            "use mode='int8' with calibration_data, or 'fp16'"
        )
    if plan.int8_io:
        raise ConfigError(
            "int8_io is for integer-only TFLite targets; ONNX/TensorRT exports keep float "
            "inputs and outputs (quantization lives in Q/DQ nodes inside the graph)"
        )
    per_layer = dict(plan.layer_precisions)
    unknown = sorted((set(per_layer) | set(plan.float_layers)) - names)
    if unknown:
        raise ConfigError(f"the precision plan names layers the model does not have: {unknown[:10]}")
    bad = sorted({p for p in per_layer.values() if p not in ("int8", "fp16", "fp32")})
    if bad:
        raise ConfigError(f"per-layer precisions must be 'int8', 'fp16' or 'fp32'; got {bad}")
    return per_layer


def _resolve_ranges(
    ranges: Mapping[str, tuple[float, float]], proto: Any, mapping: Mapping[str, str], nodes: Sequence[str]
) -> dict[str, tuple[float, float]]:
    """Activation ranges keyed by ONNX tensor: a Keras layer name means that layer's input."""
    by_tensor: dict[str, tuple[float, float]] = {}
    node_by_name = {n.name: n for n in proto.graph.node}
    for key, value in ranges.items():
        lo, hi = (float(v) for v in value)
        matched = [n for n in nodes if mapping.get(n) == key]
        if matched:
            for n in matched:
                by_tensor[node_by_name[n].input[0]] = (lo, hi)
        else:
            by_tensor[key] = (lo, hi)  # an ONNX tensor name
    return by_tensor


def to_onnx(
    model: Any,
    path: Union[str, os.PathLike, None] = None,
    opset: int = 17,
    plan: PrecisionPlan | None = None,
    calibration_data: Any = None,
    keep_io_float32: bool = True,
    activation_ranges: Mapping[str, tuple[float, float]] | None = None,
    sample_data: ArrayOrList | None = None,
) -> OnnxArtifact:
    """Export a Keras model to ONNX with the plan's precision inside the graph.

    INT8 layers get symmetric Q/DQ pairs (per-channel weights, per-tensor activations)
    calibrated on ``calibration_data`` or taken from ``activation_ranges`` (Keras layer
    name -> (min, max) of that layer's input, or ONNX tensor name -> (min, max)); FP16
    layers get float16 tensors and weights; mixed plans follow ``plan.layer_precisions``
    (unlisted layers stay fp32). The result is checked with the ONNX checker and with
    onnxruntime against Keras on ``sample_data`` (default: calibration samples, else
    random inputs); ``path`` is written atomically only after those checks pass.
    """
    import onnx


    if not isinstance(opset, int) or opset < MIN_OPSET or opset > MAX_OPSET:
        raise ExportError(
            f"opset {opset} is not supported: tf2onnx 1.17 writes opsets {MIN_OPSET}..{MAX_OPSET} "
            f"(13 is the first with per-channel Q/DQ); pass opset={MAX_OPSET} or lower"
        )
    plan = plan or PrecisionPlan()
    per_layer = _check_plan(plan, model)
    notes: list[str] = []

    proto = _convert(model, opset)
    mapping = onnx_node_layers(proto, model)
    quantizable = [n.name for n in proto.graph.node if n.op_type in op.QUANTIZABLE_OPS]

    int8_nodes: list[str] | None = []
    fp16_nodes: list[str] | None = []
    if plan.mode == "fp16":
        fp16_nodes = None
    elif plan.mode == "int8":
        excluded = set(_nodes_of(mapping, plan.float_layers))
        int8_nodes = [n for n in quantizable if n not in excluded]
    elif plan.mode == "mixed":
        int8_nodes = [n for n in _nodes_of(mapping, [k for k, v in per_layer.items() if v == "int8"]) if n in quantizable]
        fp16_nodes = _nodes_of(mapping, [k for k, v in per_layer.items() if v == "fp16"])
        mapped = set(mapping.values())
        unmatched = sorted(k for k in per_layer if k not in mapped)
        if unmatched:
            notes.append(f"layers with no ONNX node of their own (folded or glue): {unmatched[:10]}")
        no_compute = sorted(
            k for k, v in per_layer.items() if v == "int8" and k in mapped and not set(_nodes_of(mapping, [k])) & set(quantizable)
        )
        if no_compute:
            notes.append(f"int8 layers without a Conv/MatMul/Gemm (left float): {no_compute[:10]}")

    names = _input_names(model)
    batches: list[list[np.ndarray]] = []
    if int8_nodes:
        if activation_ranges is not None:
            ranges = _resolve_ranges(activation_ranges, proto, mapping, int8_nodes)
            proto = op.quantize_qdq_from_ranges(proto, ranges, int8_nodes)
            notes.append("int8 scales from the given activation ranges")
        elif calibration_data is not None:
            batches = _calibration_batches(model, calibration_data)
            feeds = [dict(zip(names, b)) for b in batches]
            method = plan.calibration
            if method == "mse":
                method = "entropy"
                notes.append("calibration 'mse' is not in onnxruntime; used 'entropy' (KL) instead")
            proto = op.quantize_qdq_calibrated(proto, feeds, nodes_to_quantize=int8_nodes, calibration=method)
            notes.append(f"int8 calibrated on {sum(len(b[0]) for b in batches)} samples ({method})")
        else:
            raise DataError(
                "an int8 export needs calibration_data (a few hundred representative inputs) "
                "or activation_ranges (from quantization-aware training)"
            )
    if fp16_nodes is None or fp16_nodes or not keep_io_float32:
        proto = op.convert_fp16(proto, nodes=fp16_nodes, keep_io_float32=keep_io_float32)

    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as err:
        raise ExportError(f"the exported ONNX graph is invalid: {err}") from err
    data = proto.SerializeToString()

    if sample_data is not None:
        xs = [np.asarray(a) for a in _as_list(sample_data, names)]
    elif batches:
        xs = [np.concatenate([b[i] for b in batches])[:32] for i in range(len(names))]
    elif calibration_data is not None:
        cal = _calibration_batches(model, calibration_data, limit=32)
        xs = [np.concatenate([b[i] for b in cal]) for i in range(len(names))]
    else:
        xs = sample_inputs(model)
    ref = _keras_outputs(model, xs)
    got = OnnxModel(data).predict(xs)
    got = got if isinstance(got, list) else [got]
    if len(got) != len(ref):
        raise ExportError(f"ONNX model has {len(got)} outputs, Keras has {len(ref)}")
    diffs = []
    for r, g in zip(ref, got):
        if r.shape != g.shape:
            raise ExportError(f"ONNX output shape {g.shape} differs from Keras {r.shape}")
        diffs.append(np.abs(r.astype(np.float64) - g.astype(np.float64)))
    max_err = float(max(d.max() for d in diffs))
    if not np.isfinite(max_err):
        raise ExportError("the ONNX model produces non-finite outputs where Keras does not (float16 overflow?)")
    mean_err = float(np.mean(np.concatenate([d.ravel() for d in diffs])))
    scale = float(max(np.abs(r).max() for r in ref)) or 1.0

    summary = op.describe_precision(proto)
    artifact = OnnxArtifact(
        model_bytes=data,
        path=None,
        opset=opset,
        precision=plan.describe(),
        input_names=[i.name for i in proto.graph.input],
        output_names=[o.name for o in proto.graph.output],
        max_abs_error=max_err,
        mean_abs_error=mean_err,
        relative_error=max_err / scale,
        per_output_max_abs_error=[float(d.max()) for d in diffs],
        sample_count=int(len(xs[0])),
        node_layers=mapping,
        quantized_nodes=list(summary.quantized_nodes),
        fp16_nodes=list(summary.fp16_nodes),
        notes=notes,
    )
    if path is not None:
        artifact.path = Path(path)
        write_atomic(artifact.path, data)
    return artifact


__all__ = ["MAX_OPSET", "MIN_OPSET", "OnnxArtifact", "onnx_node_layers", "sample_inputs", "to_onnx"]
