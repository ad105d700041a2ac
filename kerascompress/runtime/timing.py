"""Timing several artifacts interleaved, so a shared machine's drift hits them all alike.

Timings on shared machines drift by tens of percent within a minute; `compare_latency`
therefore runs the variants in rounds in one process, so their ratios stay meaningful.
Within a round each variant runs a short block of consecutive invocations: a model
invoked right after a dozen others starts with cold caches, which on a small CPU model
adds a fixed cost to every variant and makes any cut look like a saving; a block keeps
the timings warm, as a deployed model that runs again and again is.
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
    block: int = 5,
) -> dict[str, LatencyStats]:
    """Time several variants interleaved: each round runs every variant ``block`` times in a row.

    ``models`` maps a label to TFLite bytes, a path (.tflite, .onnx, or a TensorRT
    .engine on its device), or an already opened `Runner`. ``runs`` invocations of each
    are timed, in ``runs / block`` rounds; the first invocation of each block only warms
    the caches and is not counted. The order within a round rotates so no variant is
    always first after a pause.
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
    block, done, i = max(1, int(block)), 0, 0
    while done < int(runs):
        size = min(block, int(runs) - done)
        k = i % len(names)
        for n in names[k:] + names[:k]:
            if block > 1:
                runners[n].run_once()  # warms this variant's caches after the others ran
            for _ in range(size):
                times[n].append(runners[n].run_once())
        done, i = done + size, i + 1
    return {n: LatencyStats.from_times(times[n], runners[n].num_threads) for n in names}


def ratios(stats: Mapping[str, LatencyStats], baseline: str = "float32") -> dict[str, float]:
    """Each variant's median latency divided by the baseline's median."""
    if baseline not in stats:
        raise ConfigError(f"baseline {baseline!r} is not among the timed variants {sorted(stats)}")
    base = stats[baseline].median_ms
    if base <= 0:
        raise ConfigError(f"baseline {baseline!r} has a median latency of {base} ms; cannot form ratios")
    return {name: s.median_ms / base for name, s in stats.items()}
