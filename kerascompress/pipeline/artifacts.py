"""Which artifact a target runs, how to build it from a model state, and how to run it here.

LiteRT targets run a .tflite; TensorRT targets run an engine built from an ONNX whose
precision is in the graph, so here we check that ONNX's numerics with onnxruntime.
This is the only module of the pipeline that turns a `ModelState` into a file; passes
get artifacts through `PassContext.build`, which the driver wires to `build_artifact`.
"""
from __future__ import annotations

import dataclasses
import functools
import gzip
from typing import Any, Optional

from kerascompress.errors import UnsupportedModelError
from kerascompress.export.onnx import to_onnx
from kerascompress.export.tf_keras_tflite import tf_keras_to_tflite
from kerascompress.export.tflite import to_tflite
from kerascompress.export.tflite_inspect import kernel_summary
from kerascompress.models.kinds import is_tf_keras_model
from kerascompress.passes.base import ModelState
from kerascompress.runtime.litert import LiteRTModel
from kerascompress.runtime.onnx_runner import OnnxModel
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

    @functools.cached_property
    def gzip_bytes(self) -> int:
        return len(gzip.compress(self.data, compresslevel=9))

    @property
    def suffix(self) -> str:
        return "." + self.kind

    def runner(self, num_threads: int = 1) -> Any:
        """An object with ``predict(x)``, ``latency(runs, warmup)``, ``prepare_timing`` and ``run_once``."""
        if self.kind == "tflite":
            return LiteRTModel(self.data, num_threads=num_threads)
        return OnnxModel(self.data, num_threads=num_threads)

    def predict(self, x: Any) -> Any:
        """Outputs of the artifact on ``x`` (float in, float out), run on this host's runtime."""
        return self.runner().predict(x)

    def weight_summary(self) -> Optional[dict[str, Any]]:
        """Values per kernel and per channel, zeros and gzip size read back from the file (TFLite only)."""
        return kernel_summary(self.data) if self.kind == "tflite" else None


def artifact_kind(target: Target) -> str:
    """The artifact the target's runtime consumes (ONNX stands in for a TensorRT engine)."""
    return "onnx" if target.runtime == "tensorrt" else "tflite"


def build_artifact(state: ModelState, target: Target, calibration: Optional[Any] = None) -> Artifact:
    """Export ``state`` for ``target`` at the state's precision plan."""
    plan = state.precision
    legacy = is_tf_keras_model(state.model)
    if artifact_kind(target) == "tflite":
        convert = tf_keras_to_tflite if legacy else to_tflite
        data = convert(state.model, plan, representative_data=calibration, fp16_accumulation=target.supports("fp16"))
        return Artifact("tflite", data, plan.describe())
    if legacy:
        raise UnsupportedModelError(
            f"{target.name} runs {target.runtime}, built from an ONNX export, which kerascompress writes for Keras 3 "
            "models only; for a tf_keras model choose a LiteRT target or rebuild the model with Keras 3"
        )
    result = to_onnx(state.model, plan=plan, calibration_data=calibration)
    return Artifact("onnx", result.model_bytes, plan.describe())
