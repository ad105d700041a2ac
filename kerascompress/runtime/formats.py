"""Open an exported artifact with the runtime that executes it on the target.

One place decides which runner reads which file, so `validate` and `compare_latency`
cannot disagree about it.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Union

from kerascompress.errors import ConfigError, ExportError
from kerascompress.runtime.litert import LiteRTModel
from kerascompress.runtime.onnx_runner import OnnxModel
from kerascompress.runtime.runner import Runner
from kerascompress.runtime.tensorrt_runner import TensorRTEngineModel

#: An exported artifact as callers hand it in: TFLite bytes or a path to a file.
ArtifactSource = Union[bytes, bytearray, str, os.PathLike]

#: File suffix -> artifact format.
SUFFIXES = {".tflite": "tflite", ".onnx": "onnx", ".engine": "tensorrt", ".plan": "tensorrt"}

_TFLITE_MAGIC = b"TFL3"


def artifact_format(artifact: ArtifactSource) -> str:
    """``"tflite"``, ``"onnx"`` or ``"tensorrt"``; raises a clear error for anything else."""
    if isinstance(artifact, (bytes, bytearray, memoryview)):
        head = bytes(artifact[:8])
        if head[4:8] == _TFLITE_MAGIC:
            return "tflite"
        raise ExportError(
            "the artifact bytes are not a TFLite flatbuffer (no 'TFL3' identifier); pass TFLite bytes "
            "or a path to a .tflite / .onnx file"
        )
    if not isinstance(artifact, (str, os.PathLike)):
        raise ConfigError(f"an artifact is TFLite bytes or a file path, got {type(artifact).__name__}")
    path = Path(artifact)
    fmt = SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise ConfigError(
            f"cannot tell the format of {str(path)!r} from its suffix {path.suffix!r}; "
            f"validate reads {', '.join(sorted(SUFFIXES))} files"
        )
    if not path.is_file():
        raise ExportError(f"artifact {str(path)!r} does not exist")
    return fmt


def open_artifact(artifact: ArtifactSource, num_threads: int = 1) -> Runner:
    """The `Runner` of the runtime that executes ``artifact`` (chosen by `artifact_format`)."""
    fmt = artifact_format(artifact)
    if fmt == "tflite":
        return LiteRTModel(artifact, num_threads=num_threads)
    if fmt == "tensorrt":
        return TensorRTEngineModel(artifact, num_threads=num_threads)
    return OnnxModel(artifact, num_threads=num_threads)
