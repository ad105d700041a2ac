"""Which artifact a target runs, how to build it from a model state, and how to run it here.

LiteRT targets run a .tflite; TensorRT targets run an engine built from an ONNX whose
precision is in the graph, so here we check that ONNX's numerics with onnxruntime.
This is the only module of the pipeline that knows export formats.
"""
from __future__ import annotations

import dataclasses
import gzip
from typing import Any, Optional

import keras

from kerascompress.passes.base import ModelState
from kerascompress.targets.target import Target


@dataclasses.dataclass
class Artifact:
    """A deployable file in memory, plus a runner able to execute it on this host."""

    kind: str  # "tflite" or "onnx"
    data: bytes
    precision: str

    @property
    def size_bytes(self) -> int:
        return len(self.data)

    @property
    def gzip_bytes(self) -> int:
        return len(gzip.compress(self.data, compresslevel=9))

    @property
    def suffix(self) -> str:
        return "." + self.kind

    def runner(self, num_threads: int = 1) -> Any:
        """An object with ``predict(x)`` and ``latency(runs, warmup)``."""
        if self.kind == "tflite":
            from kerascompress.runtime.litert import LiteRTModel

            return LiteRTModel(self.data, num_threads=num_threads)
        from kerascompress.runtime.onnx_runner import OnnxModel

        return OnnxModel(self.data, num_threads=num_threads)


def artifact_kind(target: Target) -> str:
    """The artifact the target's runtime consumes (ONNX stands in for a TensorRT engine)."""
    return "onnx" if target.runtime == "tensorrt" else "tflite"


def build_artifact(state: ModelState, target: Target, calibration: Optional[Any] = None) -> Artifact:
    """Export ``state`` for ``target`` at the state's precision plan."""
    from kerascompress.models.kinds import is_tf_keras_model

    plan = state.precision
    legacy = is_tf_keras_model(state.model)
    if artifact_kind(target) == "tflite":
        if legacy:
            from kerascompress.export.tf_keras_tflite import (
                tf_keras_to_tflite as to_tflite,
            )
        else:
            from kerascompress.export.tflite import to_tflite

        data = to_tflite(state.model, plan, representative_data=calibration)
        return Artifact("tflite", data, plan.describe())
    if legacy:
        from kerascompress.errors import UnsupportedModelError

        raise UnsupportedModelError(
            f"{target.name} runs {target.runtime}, built from an ONNX export, which kerascompress writes for Keras 3 "
            "models only; for a tf_keras model choose a LiteRT target or rebuild the model with Keras 3"
        )
    from kerascompress.export.onnx import to_onnx

    result = to_onnx(state.model, plan=plan, calibration_data=calibration)
    return Artifact("onnx", _onnx_bytes(result), plan.describe())


def _onnx_bytes(result: Any) -> bytes:
    if isinstance(result, (bytes, bytearray)):
        return bytes(result)
    for attr in ("data", "model_bytes", "onnx_bytes"):
        value = getattr(result, attr, None)
        if isinstance(value, (bytes, bytearray)):
            return bytes(value)
    path = getattr(result, "path", None)
    if path is not None:
        from pathlib import Path

        return Path(path).read_bytes()
    raise TypeError(f"cannot read ONNX bytes from {type(result).__name__}")


def keras_predict(model: keras.Model, x: Any, batch_size: int = 64) -> Any:
    """Outputs of ``model`` on ``x`` without progress bars."""
    return model.predict(x, batch_size=batch_size, verbose=0)
