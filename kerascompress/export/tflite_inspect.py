"""Reading facts back from a .tflite flatbuffer: weight tensors, their unique values and zeros.

The report uses these to show what clustering and sparsity really left in the file the
target will run (e.g. after a later int8 pass re-quantized the weights).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from kerascompress.metrics.weight_stats import unique_per_channel

_WEIGHT_INPUT = {  # op name -> (input index of its weights, axis of output channels in the TFLite layout)
    "CONV_2D": (1, 0),
    "CONV_3D": (1, 4),
    "FULLY_CONNECTED": (1, 0),
    "DEPTHWISE_CONV_2D": (1, 3),
    "TRANSPOSE_CONV": (1, 0),
}


def tflite_kernel_stats(model_bytes: bytes) -> list[dict[str, Any]]:
    """Per weight tensor of a .tflite: distinct values, zeros, dtype, per-channel maximum.

    Read from the LiteRT interpreter (no delegate, so weights are the stored ones):
    for each CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED / TRANSPOSE_CONV / CONV_3D the
    weight input is counted. A DEQUANTIZE in front of it (fp16 or dynamic-range models)
    is followed back to the stored tensor. Each row: ``op``, ``name``, ``shape``,
    ``dtype``, ``unique_values``, ``max_unique_per_channel``, ``zero_fraction``,
    ``per_channel_quantized``.
    """
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interp = Interpreter(model_content=bytes(model_bytes),
                         experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interp.allocate_tensors()
    ops = interp._get_ops_details()
    details = {d["index"]: d for d in interp.get_tensor_details()}
    producer = {int(o): op for op in ops for o in op["outputs"]}
    rows: list[dict[str, Any]] = []
    seen: set[int] = set()
    for op in ops:
        spec = _WEIGHT_INPUT.get(op["op_name"])
        if spec is None or len(op["inputs"]) <= spec[0]:
            continue
        idx = int(op["inputs"][spec[0]])
        prev = producer.get(idx)
        while prev is not None and prev["op_name"] == "DEQUANTIZE":
            idx = int(prev["inputs"][0])
            prev = producer.get(idx)
        if idx < 0 or idx in seen or prev is not None:
            continue  # a weight computed at run time is not a stored kernel
        seen.add(idx)
        try:
            w = np.asarray(interp.get_tensor(idx))
        except ValueError:
            continue
        d = details[idx]
        q = d.get("quantization_parameters") or {}
        axis = spec[1] if w.ndim > spec[1] else 0
        rows.append({
            "op": op["op_name"],
            "name": d["name"],
            "shape": list(w.shape),
            "dtype": np.dtype(w.dtype).name,
            "unique_values": int(np.unique(w).size),
            "max_unique_per_channel": unique_per_channel(w, (axis,)) if w.ndim > 1 else int(np.unique(w).size),
            "zero_fraction": float(np.mean(w == 0)),
            "per_channel_quantized": bool(len(np.atleast_1d(q.get("scales", []))) > 1),
        })
    return rows


def kernel_summary(model_bytes: bytes) -> dict[str, Any]:
    """Summary of `tflite_kernel_stats` for a report: the worst kernel, sparsity, gzip size."""
    import gzip

    stats = tflite_kernel_stats(model_bytes)
    sizes = [int(np.prod(s["shape"])) for s in stats]
    return {
        "kernels": len(stats),
        "dtype": sorted({s["dtype"] for s in stats}),
        "max_unique_values_per_kernel": max((s["unique_values"] for s in stats), default=0),
        "max_unique_values_per_channel": max((s["max_unique_per_channel"] for s in stats), default=0),
        "zero_fraction": float(np.average([s["zero_fraction"] for s in stats], weights=sizes)) if stats else 0.0,
        "bytes": len(model_bytes),
        "gzip_bytes": len(gzip.compress(bytes(model_bytes), compresslevel=9)),
        "per_kernel": {s["name"]: {"unique_values": s["unique_values"],
                                   "max_unique_per_channel": s["max_unique_per_channel"],
                                   "zero_fraction": round(s["zero_fraction"], 4)} for s in stats},
    }
