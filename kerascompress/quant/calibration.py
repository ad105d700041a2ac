"""Calibration: the int8 ranges of activations and weights.

An int8 tensor has 256 levels between a min and a max. Min/max over calibration data
wastes most levels on rare outliers; a percentile clips them; the MSE-optimal range
minimises the rounding-plus-clipping error actually made on the data. Weights are
quantized symmetrically per output channel (scale = max|w| / 127), as TFLite does.

This module is numpy only (no Keras, no TFLite), so both the Keras fake-quant models
and the TFLite exporter compute ranges the same way.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from kerascompress.errors import ConfigError

#: Activation range methods.
METHODS = ("minmax", "percentile", "mse")
#: Calibration samples used when the caller does not say: enough that min/max and the
#: 99.99th percentile are stable on image classifiers, few enough to run in seconds.
DEFAULT_CALIBRATION_SAMPLES = 256
#: Percentile kept by the "percentile" method (per side of the range).
DEFAULT_PERCENTILE = 99.99
#: Values kept per tensor for percentile/MSE (a uniform subsample beyond this).
MAX_VALUES = 1 << 18


def check_method(method: str) -> str:
    if method not in METHODS:
        raise ConfigError(f"unknown calibration method {method!r}; choose one of {', '.join(METHODS)}")
    return method


def quantize_dequantize(x: np.ndarray, lo: float, hi: float, bits: int = 8) -> np.ndarray:
    """Round ``x`` to the asymmetric ``bits`` grid on [lo, hi] (0 exactly representable)."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    levels = (1 << bits) - 1
    scale = max(hi - lo, 1e-12) / levels
    zero = np.round(-lo / scale)
    q = np.clip(np.round(x / scale) + zero, 0, levels)
    return ((q - zero) * scale).astype(np.float32)


def _mse_range(values: np.ndarray, lo: float, hi: float, steps: int = 64) -> tuple[float, float]:
    """The clipped range [a*lo, a*hi] (a in (0, 1]) with the least quantization MSE."""
    if hi - lo <= 0:
        return lo, hi
    best, best_err = (lo, hi), np.inf
    for a in np.linspace(1.0, 1.0 / steps, steps):  # widest first: ties keep the wider range
        err = float(np.mean((quantize_dequantize(values, a * lo, a * hi) - values) ** 2))
        if err < best_err:
            best, best_err = (a * lo, a * hi), err
    return best


def activation_range(values: np.ndarray, method: str = "minmax",
                     percentile: float = DEFAULT_PERCENTILE) -> tuple[float, float]:
    """(min, max) for the int8 grid of a tensor whose observed values are ``values``.

    The range always contains 0 (TFLite requires an exactly representable zero).
    """
    check_method(method)
    v = np.asarray(values, dtype=np.float32).ravel()
    if v.size == 0:
        return 0.0, 1e-6
    lo, hi = min(float(v.min()), 0.0), max(float(v.max()), 0.0)
    if method == "percentile":
        lo = min(float(np.percentile(v, 100.0 - percentile)), 0.0)
        hi = max(float(np.percentile(v, percentile)), 0.0)
    elif method == "mse":
        lo, hi = _mse_range(v, lo, hi)
    return lo, hi


class RangeCollector:
    """Accumulates a tensor's values over calibration batches, then gives its range.

    Min/max is exact over every value; percentile and MSE use a uniform subsample of at
    most ``max_values`` values (deterministic, seeded).
    """

    def __init__(self, method: str = "minmax", percentile: float = DEFAULT_PERCENTILE,
                 max_values: int = MAX_VALUES, seed: int = 0) -> None:
        self.method = check_method(method)
        self.percentile = percentile
        self.max_values = max_values
        self._rng = np.random.default_rng(seed)
        self._lo, self._hi = np.inf, -np.inf
        self._kept: list[np.ndarray] = []
        self._seen = 0

    def update(self, x: np.ndarray) -> None:
        v = np.asarray(x, dtype=np.float32).ravel()
        if v.size == 0:
            return
        self._lo, self._hi = min(self._lo, float(v.min())), max(self._hi, float(v.max()))
        self._seen += v.size
        if self.method != "minmax":
            keep = min(v.size, max(1, self.max_values // 8))
            self._kept.append(v if keep == v.size else self._rng.choice(v, keep, replace=False))

    def range(self) -> tuple[float, float]:
        if self._seen == 0:
            return 0.0, 1e-6
        lo, hi = min(self._lo, 0.0), max(self._hi, 0.0)
        if self.method == "minmax":
            return lo, hi
        v = np.concatenate(self._kept)
        if v.size > self.max_values:
            v = self._rng.choice(v, self.max_values, replace=False)
        if self.method == "percentile":
            return activation_range(v, "percentile", self.percentile)
        return _mse_range(v, lo, hi)


def weight_scales(kernel: np.ndarray, per_channel: bool = True, axis: int = -1) -> np.ndarray:
    """Symmetric int8 scales: max|w| / 127 per output channel (``axis``) or one per tensor."""
    w = np.asarray(kernel, dtype=np.float32)
    if per_channel:
        axes = tuple(i for i in range(w.ndim) if i != axis % w.ndim)
        m = np.max(np.abs(w), axis=axes) if axes else np.abs(w)
    else:
        m = np.asarray(np.max(np.abs(w)))
    return np.maximum(m, 1e-12) / 127.0


def quantize_weights(kernel: np.ndarray, per_channel: bool = True, axis: int = -1) -> np.ndarray:
    """``kernel`` rounded to its symmetric int8 grid (narrow range, -127..127)."""
    w = np.asarray(kernel, dtype=np.float32)
    s = weight_scales(w, per_channel, axis)
    if per_channel:
        shape = [1] * w.ndim
        shape[axis % w.ndim] = -1
        s = s.reshape(shape)
    return (np.clip(np.round(w / s), -127, 127) * s).astype(np.float32)


def describe(method: str, samples: Optional[int] = None, percentile: Optional[float] = None) -> dict[str, Any]:
    """A report entry for the calibration used."""
    d: dict[str, Any] = {"method": method}
    if samples is not None:
        d["samples"] = int(samples)
    if method == "percentile":
        d["percentile"] = percentile if percentile is not None else DEFAULT_PERCENTILE
    return d
