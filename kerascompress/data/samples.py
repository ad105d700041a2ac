"""Taking samples from user data: counting, slicing and indexing arrays, lists or dicts of arrays.

Models may have one input (an array), several (a list of arrays) or named ones (a dict);
every module that takes a few samples for calibration, a batch for training or a slice
for evaluation goes through these helpers, so the three shapes are handled in one place.
"""
from __future__ import annotations

from typing import Any

import numpy as np


def n_samples(x: Any) -> int:
    """Number of samples in an array, a list of arrays (multi-input) or a dict of arrays."""
    if isinstance(x, (list, tuple)):
        return len(x[0]) if x else 0
    if isinstance(x, dict):
        return len(next(iter(x.values()))) if x else 0
    return 0 if x is None else len(x)


def take(x: Any, n: int) -> Any:
    """The first ``n`` samples of an array, a list of arrays or a dict of arrays."""
    return slice_samples(x, 0, n)


def slice_samples(x: Any, start: int, end: int) -> Any:
    """Samples ``start:end`` of an array, a list of arrays or a dict of arrays."""
    if isinstance(x, (list, tuple)):
        return [np.asarray(a)[start:end] for a in x]
    if isinstance(x, dict):
        return {k: np.asarray(v)[start:end] for k, v in x.items()}
    return x[start:end]


def index_samples(x: Any, idx: np.ndarray) -> Any:
    """The samples at positions ``idx`` (None stays None)."""
    if x is None:
        return None
    if isinstance(x, (list, tuple)):
        return [np.asarray(a)[idx] for a in x]
    if isinstance(x, dict):
        return {k: np.asarray(v)[idx] for k, v in x.items()}
    return np.asarray(x)[idx]


def as_list(value: Any) -> list:
    """The arrays of a structure as a list: a dict's values, a list or tuple, or one array."""
    if isinstance(value, dict):
        return list(value.values())
    return list(value) if isinstance(value, (list, tuple)) else [value]
