"""`Runner`: what every runtime wrapper offers (LiteRT, onnxruntime, TensorRT).

Validation and interleaved timing work on any of them through these five members, so
neither has to know which runtime it holds, and a new runtime only has to provide them.
"""
from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from kerascompress.runtime.stats import LatencyStats


@runtime_checkable
class Runner(Protocol):
    """An artifact loaded into the runtime that executes it.

    ``predict`` takes and returns float arrays in the Keras model's input and output
    order, whatever the artifact stores. ``prepare_timing`` fixes one batch-1 sample
    (``x[:1]``, or made-up inputs where the runtime can make them) that every later
    ``run_once`` invokes on, returning its wall time in milliseconds: this is what lets
    `kerascompress.runtime.timing.compare_latency` interleave several runners.
    """

    #: Threads the runtime uses; reported with every timing.
    num_threads: int

    def predict(self, x: Any) -> Any:
        """Outputs on ``x``: one array, or a list in the model's output order."""

    def prepare_timing(self, x: Any = None) -> None:
        """Fix the batch-1 sample `run_once` invokes on."""

    def run_once(self) -> float:
        """One timed invoke on the prepared sample, in milliseconds."""

    def latency(self, runs: int = 50, warmup: int = 5, x: Any = None) -> LatencyStats:
        """Median, p90 and mean per invoke at batch 1, timed on its own."""
