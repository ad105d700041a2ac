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

#: What the search minimises.
OBJECTIVES = ("latency", "size")


@dataclasses.dataclass(frozen=True)
class Constraints:
    """What the optimized model must satisfy, and what the search should minimise.

    ``max_accuracy_drop``: absolute drop in validation accuracy (0.01 = one point) against
    the float32 baseline; without labels, the drop in top-1 agreement with the original.
    Hard budgets, each met or reported as missed: ``max_latency_ms`` (median on the
    target's runtime), ``max_size_bytes`` (the deployable file), ``max_macs``, and the
    relative forms ``latency_ratio`` / ``size_ratio`` (e.g. 0.2: a fifth of the float32
    baseline's latency / bytes). ``objective``: "latency" (default: the fastest model
    within the budgets) or "size" (the smallest). ``max_search_seconds``: wall-clock
    budget of the search; it stops starting new candidates once it is spent.
    ``max_slowdown``: a pass whose artifact is slower than before it by more than this
    ratio is rolled back (timed interleaved; 1.10 absorbs shared-machine noise).
    """

    max_accuracy_drop: float = 0.01
    max_latency_ms: Optional[float] = None
    max_size_bytes: Optional[int] = None
    max_macs: Optional[int] = None
    latency_ratio: Optional[float] = None
    size_ratio: Optional[float] = None
    objective: str = "latency"
    max_search_seconds: float = 1200.0
    max_slowdown: float = 1.10

    def __post_init__(self) -> None:
        if not 0 <= self.max_accuracy_drop <= 1:
            raise ConfigError(f"max_accuracy_drop must be in [0, 1] (0.01 = one point), got {self.max_accuracy_drop}")
        if self.max_slowdown < 1:
            raise ConfigError(f"max_slowdown must be >= 1.0, got {self.max_slowdown}")
        for name in ("max_latency_ms", "max_size_bytes", "max_macs", "max_search_seconds"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ConfigError(f"{name} must be positive or None, got {value}")
        for name in ("latency_ratio", "size_ratio"):
            value = getattr(self, name)
            if value is not None and not 0 < value <= 1:
                raise ConfigError(f"{name} is a fraction of the float32 baseline in (0, 1] (0.2 = a fifth), got {value}")
        if self.objective not in OBJECTIVES:
            raise ConfigError(f"objective must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}")

    def latency_budget_ms(self, baseline_ms: Optional[float]) -> Optional[float]:
        """The tightest latency budget in milliseconds (absolute or relative to ``baseline_ms``), or None."""
        return _tightest(self.max_latency_ms, self.latency_ratio, baseline_ms)

    def size_budget_bytes(self, baseline_bytes: Optional[int]) -> Optional[float]:
        """The tightest size budget in bytes (absolute or relative to ``baseline_bytes``), or None."""
        return _tightest(self.max_size_bytes, self.size_ratio, baseline_bytes)


def _tightest(absolute: Optional[float], ratio: Optional[float], baseline: Optional[float]) -> Optional[float]:
    """The smaller of an absolute budget and a fraction of the baseline (each when given), or None."""
    given = [b for b in (absolute, None if ratio is None or baseline is None else ratio * baseline) if b is not None]
    return min(given) if given else None

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
