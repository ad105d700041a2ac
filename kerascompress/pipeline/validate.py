"""Check an exported artifact against its Keras source on the runtime that will execute it.

`validate` answers the three questions a report needs before calling an artifact good:
does it compute what the Keras model computes (fidelity, accuracy), how fast is it here
(latency), and how big is it (bytes on disk and gzipped, since pruning and clustering
only pay off after compression).
"""
from __future__ import annotations

import dataclasses
import gzip
import os
from typing import Any, Optional, Union

from kerascompress.data.samples import take
from kerascompress.data.checks import check_input_values
from kerascompress.errors import DataError
from kerascompress.metrics.fidelity import Fidelity, compare_outputs
from kerascompress.models.io import load_model
from kerascompress.runtime.formats import artifact_format, open_artifact
from kerascompress.runtime.litert import LiteRTModel
from kerascompress.runtime.stats import LatencyStats
from kerascompress.runtime.timing import compare_latency, ratios

__all__ = [
    "Fidelity",
    "LatencyStats",
    "LiteRTModel",
    "ValidationResult",
    "compare_latency",
    "compare_outputs",
    "open_artifact",
    "ratios",
    "validate",
]


@dataclasses.dataclass(frozen=True)
class ValidationResult:
    """What `validate` measured. ``fidelity`` is None without a reference model."""

    format: str
    size_bytes: int
    gzip_bytes: int
    fidelity: Optional[Fidelity]
    latency: Optional[LatencyStats]

    def as_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "size_bytes": self.size_bytes,
            "gzip_bytes": self.gzip_bytes,
            "fidelity": None if self.fidelity is None else self.fidelity.as_dict(),
            "latency": None if self.latency is None else dataclasses.asdict(self.latency),
        }


def _artifact_bytes(artifact: Union[bytes, str, os.PathLike]) -> bytes:
    if isinstance(artifact, (bytes, bytearray, memoryview)):
        return bytes(artifact)
    with open(artifact, "rb") as fh:
        return fh.read()


def _reference_model(reference: Any) -> Any:
    if reference is None or hasattr(reference, "predict"):
        return reference
    if isinstance(reference, (str, os.PathLike)):
        return load_model(reference)  # the same checks and messages as optimize (safe_mode kept)
    raise DataError(f"`reference` must be a Keras model or a path to one, got {type(reference).__name__}")


def _split_data(data: Any) -> tuple[Any, Any]:
    """(x, y): a tuple of two is (x, y) as in `kerascompress.data`; pass a list for 2-input x."""
    if isinstance(data, tuple) and len(data) == 2:
        return data
    return data, None


def validate(
    artifact: Union[bytes, str, os.PathLike],
    reference: Any = None,
    data: Any = None,
    num_threads: int = 1,
    runs: int = 50,
    warmup: int = 5,
    batch_size: Optional[int] = None,
) -> ValidationResult:
    """Measure ``artifact`` (TFLite bytes, a .tflite or a .onnx path) against ``reference``.

    ``data`` is ``x`` or ``(x, y)`` (for a multi-input model, ``x`` is a list); with a
    reference model and data, outputs are compared (and accuracy computed when ``y`` is
    given). ``runs=0`` skips timing. Raises `ExportError` for a missing or corrupt
    artifact and `ConfigError` for an unknown file suffix.
    """
    fmt = artifact_format(artifact)
    content = _artifact_bytes(artifact)
    runner = open_artifact(artifact, num_threads=num_threads)
    model = _reference_model(reference)

    fidelity = None
    x, y = _split_data(data) if data is not None else (None, None)
    if x is not None:
        check_input_values(x)  # NaN/Inf, strings, lengths: named here, not as a runtime error
    if model is not None and x is not None:
        candidate = runner.predict(x, batch_size=batch_size) if batch_size else runner.predict(x)
        ref = model.predict(x, verbose=0, batch_size=batch_size or 256)
        fidelity = compare_outputs(ref, candidate, labels=y)
    elif model is not None:
        raise DataError("validate got a reference model but no `data` to compare outputs on")

    latency = None
    if runs and runs > 0:
        sample = None if x is None else take(x, 1)
        latency = runner.latency(runs=runs, warmup=warmup, x=sample)
    return ValidationResult(fmt, len(content), len(gzip.compress(content, compresslevel=9)), fidelity, latency)

