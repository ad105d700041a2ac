"""Precision carried inside an ONNX graph, the form TensorRT 11 reads.

TensorRT 11 builds strongly typed networks only: it has no FP16/INT8 builder flags and
no calibrators, so the precision of every tensor must already be in the ONNX. This
module writes that precision:

* INT8 as explicit QuantizeLinear/DequantizeLinear pairs in the layout TensorRT fuses:
  symmetric (zero point 0), per-channel weights, per-tensor activations, float bias.
  Either calibrated by ``onnxruntime.quantization.quantize_static`` (`quantize_qdq_calibrated`)
  or written from known activation ranges, e.g. from QAT (`quantize_qdq_from_ranges`).
* FP16 by retyping the selected nodes' tensors and initializers to float16, with Cast
  nodes at every boundary to float32 parts of the graph and, when asked, at the graph's
  inputs and outputs (`convert_fp16`).

`describe_precision` reads the result back for checks and for the TensorRT gate.
Everything here works on ``onnx.ModelProto`` and never modifies its argument.
"""
from __future__ import annotations

import dataclasses
import os
import tempfile
from typing import Iterable, Iterator, Mapping, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from kerascompress.errors import ExportError

#: Ops whose weights and input activations get Q/DQ (the ops TensorRT runs in INT8).
QUANTIZABLE_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")

#: Ops that compute correctly in float16 and that TensorRT runs in FP16. Anything else in
#: a converted region stays float32, surrounded by Casts.
FP16_OPS = frozenset(
    {
        "Abs", "Add", "AveragePool", "BatchNormalization", "Clip", "Concat", "Conv",
        "ConvTranspose", "DepthToSpace", "Div", "Dropout", "Einsum", "Elu", "Erf", "Exp",
        "Expand", "Flatten", "Gather", "Gemm", "GlobalAveragePool", "GlobalMaxPool",
        "HardSigmoid", "HardSwish", "Identity", "InstanceNormalization",
        "LayerNormalization", "LeakyRelu", "MatMul", "Max", "MaxPool", "Min", "Mul", "Neg",
        "Pad", "PRelu", "Reciprocal", "ReduceMax", "ReduceMean", "ReduceMin", "ReduceSum",
        "Relu", "Reshape", "Resize", "Selu", "Sigmoid", "Slice", "Softmax", "Softplus",
        "SpaceToDepth", "Split", "Sqrt", "Squeeze", "Sub", "Tanh", "Tile", "Transpose",
        "Unsqueeze", "Pow",
    }
)

#: Inputs that the ONNX spec types as tensor(float) even when the op runs in float16.
_KEEP_FLOAT32_INPUTS = {"Resize": {1, 2}, "Upsample": {1}}

_FP16_MAX = float(np.finfo(np.float16).max)


# ----------------------------------------------------------------------------- helpers


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


def _tensor_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every tensor we can know (after shape inference)."""
    g = model.graph
    types: dict[str, int] = {}
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type:
            types[vi.name] = vi.type.tensor_type.elem_type
    for init in g.initializer:
        types[init.name] = init.data_type
    for node in g.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    types[node.output[0]] = a.t.data_type
    return types


def _toposort(nodes: Sequence[onnx.NodeProto], available: Iterable[str]) -> list[onnx.NodeProto]:
    """Stable topological order (ONNX requires producers before consumers)."""
    ready = set(available) | {""}
    pending = list(nodes)
    ordered: list[onnx.NodeProto] = []
    while pending:
        progressed = False
        rest = []
        for node in pending:
            if all(i in ready for i in node.input):
                ordered.append(node)
                ready.update(node.output)
                progressed = True
            else:
                rest.append(node)
        if not progressed:  # a cycle or a dangling input: keep the rest as they were
            ordered.extend(rest)
            break
        pending = rest
    return ordered


def _finish(model: onnx.ModelProto) -> onnx.ModelProto:
    """Drop stale value_info, re-infer types and run the ONNX checker."""
    del model.graph.value_info[:]
    try:
        model = onnx.shape_inference.infer_shapes(model)
    except Exception:  # shape inference is a help, not a requirement
        pass
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as err:
        raise ExportError(f"the rewritten ONNX graph is invalid: {err}") from err
    return model


def _unused_initializers_removed(model: onnx.ModelProto) -> None:
    used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    keep = [init for init in model.graph.initializer if init.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)


# ----------------------------------------------------------------------------- INT8 (Q/DQ)


class _Reader:
    """onnxruntime CalibrationDataReader over a list of feed dicts."""

    def __init__(self, feeds: Sequence[Mapping[str, np.ndarray]]):
        self._feeds = list(feeds)
        self._it: Iterator[Mapping[str, np.ndarray]] = iter(self._feeds)

    def get_next(self) -> Mapping[str, np.ndarray] | None:
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = iter(self._feeds)


_CALIBRATION_METHODS = {"minmax": "MinMax", "percentile": "Percentile", "entropy": "Entropy"}


def quantize_qdq_calibrated(
    model: onnx.ModelProto,
    feeds: Sequence[Mapping[str, np.ndarray]],
    nodes_to_quantize: Sequence[str] | None = None,
    nodes_to_exclude: Sequence[str] = (),
    calibration: str = "minmax",
) -> onnx.ModelProto:
    """Insert TensorRT-style Q/DQ pairs, ranges calibrated by onnxruntime on ``feeds``.

    Symmetric int8 (zero point 0) for activations (per tensor) and weights (per output
    channel); biases stay float because TensorRT fuses a float bias into the int8 kernel.
    Only `QUANTIZABLE_OPS` get Q/DQ, so precision stays float elsewhere.
    ``nodes_to_quantize=None`` means every quantizable node.
    """
    from onnxruntime import quantization as ortq

    if not feeds:
        raise ExportError("int8 calibration needs at least one batch of calibration data")
    method = _CALIBRATION_METHODS.get(calibration)
    if method is None:
        raise ExportError(
            f"calibration {calibration!r} is not available for ONNX export; use one of "
            f"{', '.join(_CALIBRATION_METHODS)}"
        )
    if nodes_to_quantize is not None and not nodes_to_quantize:
        return _copy(model)
    with tempfile.TemporaryDirectory(prefix="kc_qdq_") as tmp:
        src = os.path.join(tmp, "float.onnx")
        dst = os.path.join(tmp, "qdq.onnx")
        onnx.save(model, src)
        try:
            ortq.quantize_static(
                src,
                dst,
                _Reader(feeds),
                quant_format=ortq.QuantFormat.QDQ,
                op_types_to_quantize=list(QUANTIZABLE_OPS),
                per_channel=True,
                reduce_range=False,
                activation_type=ortq.QuantType.QInt8,
                weight_type=ortq.QuantType.QInt8,
                nodes_to_quantize=list(nodes_to_quantize) if nodes_to_quantize is not None else None,
                nodes_to_exclude=list(nodes_to_exclude),
                calibrate_method=getattr(ortq.CalibrationMethod, method),
                extra_options={
                    "ActivationSymmetric": True,
                    "WeightSymmetric": True,
                    "QuantizeBias": False,
                    "QDQKeepRemovableActivations": True,
                    # A Q/DQ pair per quantized consumer: float consumers of the same
                    # tensor (a residual Add) keep reading the float tensor.
                    "DedicatedQDQPair": True,
                    # Q/DQ on inputs only, as TensorRT expects: it propagates scales itself.
                    "OpTypesToExcludeOutputQuantization": list(QUANTIZABLE_OPS),
                },
            )
        except Exception as err:
            raise ExportError(f"onnxruntime static quantization failed: {err}") from err
        out = onnx.load(dst)
    keep = set(nodes_to_quantize) if nodes_to_quantize is not None else None
    _unshare_activation_qdq(out, keep, set(nodes_to_exclude))
    return _finish(out)


def _unshare_activation_qdq(model: onnx.ModelProto, quantized: set[str] | None, excluded: set[str]) -> None:
    """Let only the quantized nodes read dequantized activations.

    onnxruntime rewires every consumer of a quantized tensor to its DequantizeLinear, so
    a float consumer (a residual Add, a layer the plan keeps in float) would silently
    compute from int8-rounded values. Such consumers get the float tensor back, and Q/DQ
    nodes left without readers are dropped.
    """
    g = model.graph
    producers = {o: n for n in g.node for o in n.output}

    def is_quantized(node: onnx.NodeProto) -> bool:
        if node.op_type not in QUANTIZABLE_OPS or node.name in excluded:
            return False
        return quantized is None or node.name in quantized

    for node in g.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") or is_quantized(node):
            continue
        for i, t in enumerate(node.input):
            dq = producers.get(t)
            if dq is None or dq.op_type != "DequantizeLinear":
                continue
            q = producers.get(dq.input[0])
            if q is not None and q.op_type == "QuantizeLinear":
                node.input[i] = q.input[0]
    while True:  # drop Q/DQ nodes nobody reads any more
        used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
        dead = [n for n in g.node if n.op_type in ("QuantizeLinear", "DequantizeLinear") and n.output[0] not in used]
        if not dead:
            break
        for n in dead:
            g.node.remove(n)
    _unused_initializers_removed(model)


def _per_channel_axis(node: onnx.NodeProto, weight: np.ndarray) -> int:
    if node.op_type == "Conv":
        return 0
    if node.op_type == "ConvTranspose":
        return 1
    if node.op_type == "Gemm":
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return 0 if trans_b else 1
    return weight.ndim - 1  # MatMul: [..., K, N]


def quantize_qdq_from_ranges(
    model: onnx.ModelProto,
    ranges: Mapping[str, tuple[float, float]],
    nodes_to_quantize: Sequence[str] | None = None,
) -> onnx.ModelProto:
    """Insert Q/DQ pairs with activation scales taken from known ranges (e.g. from QAT).

    ``ranges`` maps an ONNX tensor name (the activation input of a quantized node) to its
    (min, max); the scale is max(|min|, |max|) / 127 with zero point 0. Weights are
    quantized per output channel from their own values. A quantized node whose input has
    no range is an error, so a range file that does not fit the model cannot go unnoticed.
    """
    model = onnx.shape_inference.infer_shapes(_copy(model))
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    types = _tensor_types(model)
    wanted = None if nodes_to_quantize is None else set(nodes_to_quantize)
    targets = [
        n for n in g.node if n.op_type in QUANTIZABLE_OPS and (wanted is None or n.name in wanted)
    ]
    missing = sorted({n.input[0] for n in targets if n.input[0] not in ranges})
    if missing:
        raise ExportError(
            "no activation range for the input of these quantized ONNX tensors: "
            + ", ".join(missing[:10])
            + ("..." if len(missing) > 10 else "")
            + "; give a (min, max) for each, or keep those layers in float"
        )
    new_nodes: list[onnx.NodeProto] = []
    new_inits: list[TensorProto] = []
    act_dq: dict[str, str] = {}

    def activation(tensor: str) -> str:
        if tensor in act_dq:
            return act_dq[tensor]
        lo, hi = ranges[tensor]
        amax = max(abs(float(lo)), abs(float(hi)))
        if not np.isfinite(amax):
            raise ExportError(f"activation range of {tensor!r} is not finite: {(lo, hi)}")
        scale = np.array(max(amax, 1e-8) / 127.0, dtype=np.float32)
        base = f"{tensor}__act"
        new_inits.append(numpy_helper.from_array(scale, f"{base}_scale"))
        new_inits.append(numpy_helper.from_array(np.array(0, dtype=np.int8), f"{base}_zero_point"))
        new_nodes.append(
            helper.make_node(
                "QuantizeLinear", [tensor, f"{base}_scale", f"{base}_zero_point"], [f"{base}_q"],
                name=f"{base}_QuantizeLinear",
            )
        )
        new_nodes.append(
            helper.make_node(
                "DequantizeLinear", [f"{base}_q", f"{base}_scale", f"{base}_zero_point"], [f"{base}_dq"],
                name=f"{base}_DequantizeLinear",
            )
        )
        act_dq[tensor] = f"{base}_dq"
        return act_dq[tensor]

    for node in targets:
        node.input[0] = activation(node.input[0])
        if len(node.input) < 2:
            continue
        w_name = node.input[1]
        if w_name not in inits:
            if w_name in ranges and types.get(w_name) == TensorProto.FLOAT:
                node.input[1] = activation(w_name)  # activation x activation MatMul
            continue
        w = numpy_helper.to_array(inits[w_name]).astype(np.float32)
        axis = _per_channel_axis(node, w)
        reduce_axes = tuple(a for a in range(w.ndim) if a != axis)
        amax = np.abs(w).max(axis=reduce_axes) if reduce_axes else np.abs(w)
        scale = (np.maximum(amax, 1e-8) / 127.0).astype(np.float32)
        shape = [1] * w.ndim
        shape[axis] = -1
        q = np.clip(np.round(w / scale.reshape(shape)), -127, 127).astype(np.int8)
        base = f"{w_name}__w{len(new_inits)}"
        new_inits.append(numpy_helper.from_array(q, f"{base}_quantized"))
        new_inits.append(numpy_helper.from_array(scale, f"{base}_scale"))
        new_inits.append(numpy_helper.from_array(np.zeros(scale.shape, np.int8), f"{base}_zero_point"))
        new_nodes.append(
            helper.make_node(
                "DequantizeLinear",
                [f"{base}_quantized", f"{base}_scale", f"{base}_zero_point"],
                [f"{base}_dq"],
                name=f"{base}_DequantizeLinear",
                axis=axis,
            )
        )
        node.input[1] = f"{base}_dq"

    g.initializer.extend(new_inits)
    ordered = _toposort(
        list(g.node) + new_nodes,
        [i.name for i in g.input] + [i.name for i in g.initializer],
    )
    del g.node[:]
    g.node.extend(ordered)
    _unused_initializers_removed(model)
    return _finish(model)


# ----------------------------------------------------------------------------- FP16


def convert_fp16(
    model: onnx.ModelProto,
    nodes: Iterable[str] | None = None,
    keep_io_float32: bool = True,
) -> onnx.ModelProto:
    """Retype the selected nodes to float16 (all convertible nodes when ``nodes`` is None).

    Float32 initializers read by converted nodes become float16 copies (clipped to the
    float16 range); Casts join float16 and float32 regions. With ``keep_io_float32`` the
    graph keeps float32 inputs and outputs (Casts at the edges), otherwise float inputs
    and outputs become float16 too. Q/DQ nodes are never converted, so this composes
    with `quantize_qdq_calibrated` for mixed INT8/FP16 graphs.
    """
    model = onnx.shape_inference.infer_shapes(_copy(model))
    g = model.graph
    types = _tensor_types(model)
    FLOAT, HALF = TensorProto.FLOAT, TensorProto.FLOAT16
    selected = None if nodes is None else set(nodes)
    graph_inputs = {i.name for i in g.input}
    graph_outputs = {o.name for o in g.output}
    inits = {i.name: i for i in g.initializer}

    converted: set[int] = set()
    for idx, node in enumerate(g.node):
        if selected is not None and node.name not in selected:
            continue
        if node.op_type not in FP16_OPS or node.domain not in ("", "ai.onnx"):
            continue
        out_types = [types.get(o) for o in node.output if o]
        if FLOAT not in out_types or any(t is None for t in out_types):
            continue
        converted.add(idx)

    produced16: set[str] = set()
    for idx in converted:
        produced16.update(o for o in g.node[idx].output if o and types.get(o) == FLOAT)
    if not keep_io_float32:
        produced16.update(i for i in graph_inputs if types.get(i) == FLOAT)

    new_nodes: list[onnx.NodeProto] = []
    new_inits: list[TensorProto] = []
    name16: dict[str, str] = {}
    name32: dict[str, str] = {}
    renamed_outputs: dict[str, str] = {}
    for t in produced16:
        if t in graph_outputs and keep_io_float32:
            renamed_outputs[t] = f"{t}__fp16"

    def as16(t: str) -> str:
        if t in name16:
            return name16[t]
        if t in produced16:
            name16[t] = renamed_outputs.get(t, t)
        elif t in inits and inits[t].data_type == FLOAT:
            arr = numpy_helper.to_array(inits[t])
            arr16 = np.clip(arr, -_FP16_MAX, _FP16_MAX).astype(np.float16)
            new_inits.append(numpy_helper.from_array(arr16, f"{t}__fp16"))
            name16[t] = f"{t}__fp16"
        else:
            new_nodes.append(helper.make_node("Cast", [t], [f"{t}__fp16"], name=f"{t}__to_fp16", to=HALF))
            name16[t] = f"{t}__fp16"
        return name16[t]

    def as32(t: str) -> str:
        if t not in produced16:
            return t
        if t in name32:
            return name32[t]
        if t in renamed_outputs:
            name32[t] = t  # the Cast at the graph output is added below and produces t
        else:
            new_nodes.append(helper.make_node("Cast", [t], [f"{t}__fp32"], name=f"{t}__to_fp32", to=FLOAT))
            name32[t] = f"{t}__fp32"
        return name32[t]

    for idx, node in enumerate(g.node):
        is16 = idx in converted
        keep = _KEEP_FLOAT32_INPUTS.get(node.op_type, set())
        for i, t in enumerate(node.input):
            if not t or (types.get(t) != FLOAT and t not in produced16):
                continue
            node.input[i] = as16(t) if is16 and i not in keep else as32(t)
        if is16:
            for i, t in enumerate(node.output):
                if t in renamed_outputs:
                    node.output[i] = renamed_outputs[t]
    for t, t16 in renamed_outputs.items():
        new_nodes.append(helper.make_node("Cast", [t16], [t], name=f"{t}__output_to_fp32", to=FLOAT))

    for vi in list(g.input) + list(g.output):
        if vi.name in produced16 and vi.name not in renamed_outputs:
            vi.type.tensor_type.elem_type = HALF
    g.initializer.extend(new_inits)
    ordered = _toposort(list(g.node) + new_nodes, list(graph_inputs) + [i.name for i in g.initializer])
    del g.node[:]
    g.node.extend(ordered)
    _unused_initializers_removed(model)
    return _finish(model)


# ----------------------------------------------------------------------------- reading back


@dataclasses.dataclass(frozen=True)
class QdqInfo:
    """One DequantizeLinear feeding a compute node, as TensorRT will see it."""

    consumer: str  # the node that reads the dequantized tensor
    consumer_op: str
    kind: str  # "weight" (constant int8 input) or "activation" (fed by a QuantizeLinear)
    axis: int | None  # per-channel axis, None for per-tensor
    scale_size: int
    zero_points: tuple[int, ...]
    quant_type: str  # "int8", "uint8", "fp8", ...


@dataclasses.dataclass(frozen=True)
class PrecisionSummary:
    """What precisions an ONNX graph carries, read from the graph itself."""

    qdq: tuple[QdqInfo, ...]
    quantized_nodes: tuple[str, ...]  # compute nodes with a dequantized input
    fp16_initializers: int
    fp32_initializers: int
    fp16_nodes: tuple[str, ...]  # nodes with a float16 output (excluding Casts)
    input_types: tuple[str, ...]
    output_types: tuple[str, ...]
    precisions: tuple[str, ...]  # e.g. ("fp32", "fp16", "int8")


_TYPE_NAMES = {
    TensorProto.INT8: "int8",
    TensorProto.UINT8: "uint8",
    TensorProto.FLOAT: "fp32",
    TensorProto.FLOAT16: "fp16",
    TensorProto.BFLOAT16: "bf16",
    TensorProto.INT32: "int32",
    TensorProto.INT64: "int64",
}
for _name in ("FLOAT8E4M3FN", "FLOAT8E5M2"):
    if hasattr(TensorProto, _name):
        _TYPE_NAMES[getattr(TensorProto, _name)] = "fp8"
for _name in ("INT4", "UINT4"):
    if hasattr(TensorProto, _name):
        _TYPE_NAMES[getattr(TensorProto, _name)] = "int4"


def describe_precision(model: onnx.ModelProto) -> PrecisionSummary:
    """Read back Q/DQ layout and float16 typing (for tests, reports and the TensorRT gate)."""
    model = onnx.shape_inference.infer_shapes(_copy(model))
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    types = _tensor_types(model)
    producers = {o: n for n in g.node for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)

    def const(name: str) -> np.ndarray | None:
        if name in inits:
            return numpy_helper.to_array(inits[name])
        p = producers.get(name)
        if p is not None and p.op_type == "Constant":
            return numpy_helper.to_array(next(a.t for a in p.attribute if a.name == "value"))
        return None

    qdq: list[QdqInfo] = []
    quantized: set[str] = set()
    for n in g.node:
        if n.op_type != "DequantizeLinear":
            continue
        scale = const(n.input[1])
        zp_name = n.input[2] if len(n.input) > 2 else ""
        zp = const(zp_name) if zp_name else None
        qtype = _TYPE_NAMES.get(types.get(zp_name or n.input[0], 0), "int8" if zp is None else str(zp.dtype))
        axis_attr = next((a.i for a in n.attribute if a.name == "axis"), None)
        size = 1 if scale is None else int(np.size(scale))
        axis = axis_attr if size > 1 else None
        src = producers.get(n.input[0])
        kind = "activation" if src is not None and src.op_type == "QuantizeLinear" else "weight"
        if n.input[0] in inits:
            kind = "weight"
        for c in consumers.get(n.output[0], []):
            qdq.append(
                QdqInfo(
                    consumer=c.name,
                    consumer_op=c.op_type,
                    kind=kind,
                    axis=axis,
                    scale_size=size,
                    zero_points=tuple(int(v) for v in np.ravel(zp)) if zp is not None else (0,),
                    quant_type=qtype,
                )
            )
            if c.op_type not in ("QuantizeLinear", "DequantizeLinear"):
                quantized.add(c.name)

    fp16_inits = sum(1 for i in g.initializer if i.data_type == TensorProto.FLOAT16)
    fp32_inits = sum(1 for i in g.initializer if i.data_type == TensorProto.FLOAT)
    fp16_nodes = tuple(
        n.name
        for n in g.node
        if n.op_type != "Cast" and any(types.get(o) == TensorProto.FLOAT16 for o in n.output if o)
    )
    io_in = tuple(_TYPE_NAMES.get(i.type.tensor_type.elem_type, "?") for i in g.input)
    io_out = tuple(_TYPE_NAMES.get(o.type.tensor_type.elem_type, "?") for o in g.output)
    precisions = {"fp32"} if fp32_inits or "fp32" in io_in else set()
    if fp16_nodes or fp16_inits:
        precisions.add("fp16")
    for q in qdq:
        if q.quant_type in ("int8", "uint8", "fp8", "int4"):
            precisions.add(q.quant_type if q.quant_type != "uint8" else "int8")
    order = ("fp32", "fp16", "bf16", "int8", "fp8", "int4")
    return PrecisionSummary(
        qdq=tuple(qdq),
        quantized_nodes=tuple(sorted(quantized)),
        fp16_initializers=fp16_inits,
        fp32_initializers=fp32_inits,
        fp16_nodes=fp16_nodes,
        input_types=io_in,
        output_types=io_out,
        precisions=tuple(p for p in order if p in precisions),
    )


__all__ = [
    "FP16_OPS",
    "QUANTIZABLE_OPS",
    "PrecisionSummary",
    "QdqInfo",
    "convert_fp16",
    "describe_precision",
    "quantize_qdq_calibrated",
    "quantize_qdq_from_ranges",
]
