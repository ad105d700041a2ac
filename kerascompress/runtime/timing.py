"""Timing several artifacts interleaved, so a shared machine's drift hits them all alike.

Timings on shared machines drift by tens of percent within a minute; `compare_latency`
therefore runs the variants round-robin in one process, so their ratios stay meaningful.
"""
from __future__ import annotations

from typing import Any, Mapping

from kerascompress.errors import ConfigError
from kerascompress.runtime.formats import open_artifact
from kerascompress.runtime.stats import LatencyStats


def _runner(model: Any, num_threads: int) -> Any:
    if hasattr(model, "run_once") and hasattr(model, "prepare_timing"):
        return model

    runner = open_artifact(model, num_threads=num_threads)
    if not (hasattr(runner, "run_once") and hasattr(runner, "prepare_timing")):
        raise ConfigError(
            f"{type(runner).__name__} has no prepare_timing()/run_once(), so it cannot be timed interleaved; "
            "time it on its own with .latency()"
        )
    return runner


def compare_latency(
    models: Mapping[str, Any],
    runs: int = 50,
    warmup: int = 5,
    num_threads: int = 1,
    x: Any = None,
) -> dict[str, LatencyStats]:
    """Time several variants interleaved: each round invokes every variant once.

    ``models`` maps a label to TFLite bytes, a path (.tflite, or .onnx when the ONNX
    runner is present), or an already opened runner with ``prepare_timing``/``run_once``.
    The order within a round rotates so no variant is always first after a pause.
    """
    if not models:
        raise ConfigError("compare_latency needs at least one model")
    runners = {name: _runner(m, num_threads) for name, m in models.items()}
    for r in runners.values():
        r.prepare_timing(x)
    names = list(runners)
    times: dict[str, list[float]] = {n: [] for n in names}
    for _ in range(int(warmup)):
        for n in names:
            runners[n].run_once()
    for i in range(int(runs)):
        k = i % len(names)
        for n in names[k:] + names[:k]:
            times[n].append(runners[n].run_once())
    return {n: LatencyStats.from_times(times[n], getattr(runners[n], "num_threads", num_threads)) for n in names}


def ratios(stats: Mapping[str, LatencyStats], baseline: str = "float32") -> dict[str, float]:
    """Each variant's median latency divided by the baseline's median."""
    if baseline not in stats:
        raise ConfigError(f"baseline {baseline!r} is not among the timed variants {sorted(stats)}")
    base = stats[baseline].median_ms
    if base <= 0:
        raise ConfigError(f"baseline {baseline!r} has a median latency of {base} ms; cannot form ratios")
    return {name: s.median_ms / base for name, s in stats.items()}
