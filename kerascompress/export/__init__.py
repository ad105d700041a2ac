"""Exporters: one per target format. Each reads a `PrecisionPlan`, none knows the passes.

    kc.export.to_tflite(model, "int8", representative_data=x)
    kc.export.to_onnx(model, path="model.onnx")
    kc.export.to_tensorrt("model.onnx", target="nvidia-jetson-orin-sm87", out_dir="trt/")
"""
from __future__ import annotations

from typing import Any

from kerascompress.export.tflite import TFLITE_MODES, to_tflite


def to_onnx(*args: Any, **kwargs: Any) -> Any:
    """Keras -> ONNX via tf2onnx, checked with onnxruntime; see `kerascompress.export.onnx.to_onnx`."""
    from kerascompress.export.onnx import to_onnx as _to_onnx

    return _to_onnx(*args, **kwargs)


def to_tensorrt(*args: Any, **kwargs: Any) -> Any:
    """ONNX -> TensorRT engine (or the build command where TensorRT is absent); see `export.tensorrt`."""
    from kerascompress.export.tensorrt import to_tensorrt as _to_tensorrt

    return _to_tensorrt(*args, **kwargs)


__all__ = ["TFLITE_MODES", "to_tflite", "to_onnx", "to_tensorrt"]
