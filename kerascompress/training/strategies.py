"""Which `tf.distribute.Strategy` fine-tuning runs under, and facts about it.

One MirroredStrategy per process: every instance numbers its collective all-reduce ops
from the same start, so a second instance in the same process (one per fine-tuning
call, say) reuses keys the runtime has already bound to other tensor shapes and fails
with "Shape mismatch in the collective instance" (tensorflow/tensorflow#62790; on CPU
devices MirroredStrategy picks CollectiveAllReduce). `mirrored` hands out one cached
instance per device set.
"""
from __future__ import annotations

import functools
from typing import Any, Optional, Sequence

from kerascompress.errors import StrategyError


def resolve(strategy: Any) -> Any:
    """``strategy``, or the current one (a single device unless called inside a scope) for None."""
    import tensorflow as tf

    if strategy is None:
        return tf.distribute.get_strategy()
    if not isinstance(strategy, tf.distribute.Strategy):
        raise StrategyError(
            f"strategy must be a tf.distribute.Strategy, got {type(strategy).__name__}: pass e.g. "
            f"kerascompress.training.strategies.mirrored() (all local GPUs), "
            f"tf.distribute.MultiWorkerMirroredStrategy() (several hosts), or None for one device"
        )
    return strategy


@functools.lru_cache(maxsize=None)
def _mirrored(devices: Optional[tuple[str, ...]]) -> Any:
    import tensorflow as tf

    return tf.distribute.MirroredStrategy(list(devices) if devices else None)


def mirrored(devices: Optional[Sequence[str]] = None) -> Any:
    """The process-wide MirroredStrategy over ``devices`` (all local GPUs, else the CPU, when None)."""
    return _mirrored(tuple(devices) if devices else None)


def logical_cpus(n: int) -> list[str]:
    """Split the host CPU into ``n`` logical devices and name them: replicas without GPUs (tests, CI).

    Must run before TensorFlow initialises its devices (before any op runs).
    """
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * n)
    except RuntimeError as exc:
        have = len(tf.config.list_logical_devices("CPU"))
        if have < n:
            raise StrategyError(f"TensorFlow is already initialised with {have} CPU device(s): split the CPU "
                                f"before running any TensorFlow op (at the top of the script)") from exc
    return [f"/cpu:{i}" for i in range(n)]


def worker(strategy: Any) -> tuple[bool, int, int]:
    """(is_chief, task id, number of workers): (True, 0, 1) for single-host strategies."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return True, 0, 1
    spec = resolver.cluster_spec().as_dict()
    task_type, task_id = resolver.task_type, int(resolver.task_id or 0)
    chief = task_type == "chief" or (task_type == "worker" and task_id == 0 and "chief" not in spec)
    return chief, task_id, sum(len(spec.get(job, [])) for job in ("chief", "worker"))


def devices(strategy: Any) -> list[str]:
    """The devices the strategy computes on (empty when it does not say)."""
    try:
        return list(strategy.extended.worker_devices)
    except (AttributeError, RuntimeError, ValueError):
        return []
