"""Public value types of the `optimize` contract: constraints and the result."""
from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Optional

import keras

from kerascompress.errors import ConfigError
from kerascompress.fileio import write_text_atomic
from kerascompress.pipeline.report import Report


@dataclasses.dataclass(frozen=True)
class Constraints:
    """What the optimized model must satisfy.

    ``max_accuracy_drop``: absolute drop in held-out accuracy (0.01 = one point) against
    the float32 baseline; without labels, the drop in top-1 agreement with the original.
    ``max_slowdown``: a pass whose artifact is slower than before it by more than this
    ratio is rolled back (timed interleaved; 1.10 absorbs shared-machine noise).
    ``max_latency_ms`` / ``max_size_bytes``: goals checked on the final model and
    reported as met or not.
    """

    max_accuracy_drop: float = 0.01
    max_latency_ms: Optional[float] = None
    max_size_bytes: Optional[int] = None
    max_slowdown: float = 1.10

    def __post_init__(self) -> None:
        if not 0 <= self.max_accuracy_drop <= 1:
            raise ConfigError(f"max_accuracy_drop must be in [0, 1] (0.01 = one point), got {self.max_accuracy_drop}")
        if self.max_slowdown < 1:
            raise ConfigError(f"max_slowdown must be >= 1.0, got {self.max_slowdown}")
        for name in ("max_latency_ms", "max_size_bytes"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigError(f"{name} must be positive or None, got {value}")


@dataclasses.dataclass
class OptimizeResult:
    """What `optimize` returns: the compressed model, its artifacts and the report."""

    model: keras.Model
    artifacts: dict[str, Optional[Path]]
    report: Report

    def save(self, path: str | Path) -> Path:
        """Write the model (.keras), every artifact and the report (JSON, Markdown) into ``path``."""
        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        self.model.save(out / "model.keras")
        for name, artifact in self.artifacts.items():
            if artifact is not None and Path(artifact).exists() and Path(artifact).parent.resolve() != out.resolve():
                target = out / Path(artifact).name
                if Path(artifact).is_dir():
                    shutil.copytree(artifact, target, dirs_exist_ok=True)
                else:
                    shutil.copy2(artifact, target)
        self.report.to_json(out / "report.json")
        write_text_atomic(out / "report.md", self.report.to_markdown())
        return out
