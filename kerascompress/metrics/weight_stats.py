"""Statistics of weight tensors that say what weight sharing and sparsity really left behind."""
from __future__ import annotations

from typing import Sequence

import numpy as np


def unique_per_channel(kernel: np.ndarray, channel_axes: Sequence[int]) -> int:
    """The largest number of distinct values in any one output channel of ``kernel``."""
    axes = [a % kernel.ndim for a in channel_axes]
    rest = [a for a in range(kernel.ndim) if a not in axes]
    groups = np.transpose(kernel, axes + rest).reshape(int(np.prod([kernel.shape[a] for a in axes])), -1)
    return max(int(np.unique(g).size) for g in groups)
