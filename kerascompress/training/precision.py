"""Mixed-precision training: which Keras dtype policy a run computes in.

``mixed_bfloat16`` is allowed everywhere: bfloat16 keeps float32's exponent range, so it
needs no loss scaling, and CPUs with AVX512-BF16/AMX run it natively (elsewhere it is
emulated and merely slow). ``mixed_float16`` is refused unless the strategy computes on
a GPU: on a CPU float16 is emulated, slower than float32, and its narrow exponent range
needs loss scaling for no gain. Variables stay float32 either way.
"""
from __future__ import annotations

from typing import Any, Optional

from kerascompress.errors import ConfigError
from kerascompress.training.strategies import devices

POLICIES = ("float32", "mixed_bfloat16", "mixed_float16")


def has_gpu(strategy: Any) -> bool:
    """True when the strategy computes on at least one GPU (the default strategy: when TF sees one)."""
    import tensorflow as tf

    names = devices(strategy)
    if names:
        return any("GPU" in d.upper() for d in names)
    return bool(tf.config.list_logical_devices("GPU"))


def check(mixed_precision: Optional[str]) -> Optional[str]:
    """The policy name (None for float32); refuses unknown names."""
    if mixed_precision in (None, "float32"):
        return None
    if mixed_precision not in POLICIES:
        raise ConfigError(f"mixed_precision must be None, 'mixed_bfloat16' or 'mixed_float16'; got {mixed_precision!r}")
    return mixed_precision


def resolve(mixed_precision: Optional[str], strategy: Any) -> Optional[str]:
    """The Keras dtype policy to train with under ``strategy`` (None: float32)."""
    policy = check(mixed_precision)
    if policy == "mixed_float16" and not has_gpu(strategy):
        raise ConfigError("mixed_precision='mixed_float16' needs a GPU: on a CPU float16 is emulated and slower than "
                          "float32. Use mixed_precision='mixed_bfloat16' (runs on CPUs) or None.")
    return policy


def needs_loss_scaling(policy: Optional[str]) -> bool:
    """float16 gradients underflow without loss scaling; bfloat16 and float32 do not."""
    return policy == "mixed_float16"
