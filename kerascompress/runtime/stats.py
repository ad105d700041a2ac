"""`LatencyStats`: what every runner reports about its per-invoke wall time."""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from kerascompress.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class LatencyStats:
    """Per-invoke wall time of one model at batch 1, in milliseconds."""

    median_ms: float
    p90_ms: float
    mean_ms: float
    runs: int
    threads: int

    @classmethod
    def from_times(cls, times_ms: Sequence[float], threads: int) -> "LatencyStats":
        t = np.asarray(times_ms, dtype=np.float64)
        if t.size == 0:
            raise ConfigError("latency needs runs >= 1")
        return cls(float(np.median(t)), float(np.percentile(t, 90)), float(t.mean()), int(t.size), int(threads))
