"""The structure of a .tflite flatbuffer, read without running it.

Memory planning (`tflite_memory`), the Edge TPU op check and the FP16 metadata check
read the file the target will run, not our idea of it: operators in execution order
with their tensors, each tensor's shape, type and whether its data is stored in the
file (weights) or computed (activations), and the model's metadata strings. Read with
the flatbuffer schema shipped in ``ai_edge_litert`` (``schema_py_generated``).
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

from kerascompress.errors import ExportError

#: Bytes per element of TFLite tensor types (schema.fbs ``TensorType``); sub-byte types round up.
_ITEM_BYTES = {
    "FLOAT32": 4, "FLOAT16": 2, "BFLOAT16": 2, "FLOAT64": 8, "INT32": 4, "UINT32": 4, "INT64": 8, "UINT64": 8,
    "INT16": 2, "UINT16": 2, "INT8": 1, "UINT8": 1, "BOOL": 1, "INT4": 1, "UINT4": 1, "INT2": 1,
    "COMPLEX64": 8, "COMPLEX128": 16, "FLOAT8_E4M3FN": 1, "FLOAT8_E5M2": 1,
}


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    index: int
    name: str
    dtype: str  # schema TensorType name: "INT8", "FLOAT32", ...
    shape: tuple[int, ...]
    constant: bool  # data stored in the file (weights, biases, shapes)
    variable: bool  # a resource/state tensor the runtime keeps across invocations

    @property
    def nbytes(self) -> int:
        """Bytes of the tensor's data (dynamic dimensions, -1, count as 1)."""
        count = int(np.prod([max(int(d), 1) for d in self.shape])) if self.shape else 1
        return count * _ITEM_BYTES.get(self.dtype, 4)


@dataclasses.dataclass(frozen=True)
class OperatorInfo:
    index: int
    name: str  # builtin name ("CONV_2D") or the custom code
    inputs: tuple[int, ...]  # tensor indices; -1 = omitted optional input
    outputs: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class TFLiteGraph:
    """The first (main) subgraph of a .tflite plus the model's metadata."""

    tensors: tuple[TensorInfo, ...]
    operators: tuple[OperatorInfo, ...]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    metadata: dict[str, bytes]
    subgraphs: int

    def op_names(self) -> list[str]:
        return [op.name for op in self.operators]


def _schema():
    try:
        from ai_edge_litert import schema_py_generated as schema  # noqa: PLC0415 - heavy, only when read
    except ImportError as err:  # pragma: no cover - a declared dependency
        raise ExportError("reading a .tflite needs the ai-edge-litert package: pip install ai-edge-litert") from err
    return schema


def read_graph(model_bytes: bytes) -> TFLiteGraph:
    """Parse ``model_bytes`` (a .tflite flatbuffer); raises `ExportError` when it is not one."""
    schema = _schema()
    data = bytes(model_bytes)
    try:
        model = schema.Model.GetRootAs(data, 0)
        n_subgraphs = model.SubgraphsLength()
    except Exception as err:
        raise ExportError(f"not a TFLite flatbuffer: {err}") from err
    if n_subgraphs < 1:
        raise ExportError("the .tflite has no subgraph")
    type_names = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    op_names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}

    codes = []
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        builtin = max(int(code.BuiltinCode()), int(code.DeprecatedBuiltinCode()))
        name = op_names.get(builtin, f"BUILTIN_{builtin}")
        if name == "CUSTOM" and code.CustomCode():
            name = code.CustomCode().decode("utf-8", "replace")
        codes.append(name)

    def stored(buffer_index: int) -> bool:
        if buffer_index <= 0 or buffer_index >= model.BuffersLength():
            return False
        buf = model.Buffers(buffer_index)
        return buf.DataLength() > 0 or int(getattr(buf, "Size", lambda: 0)() or 0) > 0

    graph = model.Subgraphs(0)
    tensors = []
    for i in range(graph.TensorsLength()):
        t = graph.Tensors(i)
        shape = tuple(int(d) for d in t.ShapeAsNumpy()) if t.ShapeLength() else ()
        tensors.append(TensorInfo(
            index=i,
            name=(t.Name() or b"").decode("utf-8", "replace"),
            dtype=type_names.get(t.Type(), str(t.Type())),
            shape=shape,
            constant=stored(t.Buffer()),
            variable=bool(t.IsVariable()),
        ))
    operators = []
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        ins = tuple(int(x) for x in op.InputsAsNumpy()) if op.InputsLength() else ()
        outs = tuple(int(x) for x in op.OutputsAsNumpy()) if op.OutputsLength() else ()
        operators.append(OperatorInfo(index=i, name=codes[op.OpcodeIndex()], inputs=ins, outputs=outs))
    metadata = {}
    for i in range(model.MetadataLength()):
        m = model.Metadata(i)
        buf = model.Buffers(m.Buffer())
        metadata[(m.Name() or b"").decode("utf-8", "replace")] = bytes(buf.DataAsNumpy()) if buf.DataLength() else b""
    return TFLiteGraph(
        tensors=tuple(tensors),
        operators=tuple(operators),
        inputs=tuple(int(x) for x in graph.InputsAsNumpy()) if graph.InputsLength() else (),
        outputs=tuple(int(x) for x in graph.OutputsAsNumpy()) if graph.OutputsLength() else (),
        metadata=metadata,
        subgraphs=n_subgraphs,
    )


#: Metadata key the converter writes for reduced-precision models (tensorflow/lite/tools/optimize/reduced_precision_support.h).
REDUCED_PRECISION_KEY = "reduced_precision_support"


def reduced_precision_support(model_bytes: bytes) -> Optional[str]:
    """The model's ``reduced_precision_support`` metadata ("fp16accfp32", "fp16accfp16", ...), None if absent.

    XNNPACK computes an FP16 model in FP16 on ARMv8.2 FP16 hardware only when this says
    the model accepts FP16 inference and FP16 accumulation ("fp16accfp16").
    """
    raw = read_graph(model_bytes).metadata.get(REDUCED_PRECISION_KEY)
    return None if raw is None else raw.rstrip(b"\x00").decode("utf-8", "replace")
