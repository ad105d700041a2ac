"""Timing several artifacts interleaved, so a shared machine's drift hits them all alike.

Timings on shared machines drift by tens of percent within a minute; `compare_latency`
therefore runs the variants round-robin in one process, so their ratios stay meaningful.
"""
from __future__ import annotations

from typing import Any, Mapping, Union

from kerascompress.errors import ConfigError
from kerascompress.runtime.formats import ArtifactSource, open_artifact
from kerascompress.runtime.runner import Runner
from kerascompress.runtime.stats import LatencyStats


def _runner(model: Union[Runner, ArtifactSource], num_threads: int) -> Runner:
    """An opened runner as is; an artifact (bytes or a path) opened with its runtime."""
    if isinstance(model, Runner):
        return model
    return open_artifact(model, num_threads=num_threads)


def compare_latency(
    models: Mapping[str, Union[Runner, ArtifactSource]],
    runs: int = 50,
    warmup: int = 5,
    num_threads: int = 1,
    x: Any = None,
) -> dict[str, LatencyStats]:
    """Time several variants interleaved: each round invokes every variant once.

    ``models`` maps a label to TFLite bytes, a path (.tflite, .onnx, or a TensorRT
    .engine on its device), or an already opened `Runner`.
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
    return {n: LatencyStats.from_times(times[n], runners[n].num_threads) for n in names}


def ratios(stats: Mapping[str, LatencyStats], baseline: str = "float32") -> dict[str, float]:
    """Each variant's median latency divided by the baseline's median."""
    if baseline not in stats:
        raise ConfigError(f"baseline {baseline!r} is not among the timed variants {sorted(stats)}")
    base = stats[baseline].median_ms
    if base <= 0:
        raise ConfigError(f"baseline {baseline!r} has a median latency of {base} ms; cannot form ratios")
    return {name: s.median_ms / base for name, s in stats.items()}
