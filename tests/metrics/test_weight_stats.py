"""Distinct values per output channel: what weight sharing really left."""
from __future__ import annotations

import numpy as np

from kerascompress.metrics.weight_stats import unique_per_channel


def test_the_worst_channel_counts():
    k = np.zeros((3, 3, 2, 4))  # a Conv2D kernel, output channels last
    k[..., 0] = 1.0  # one value
    k[0, 0, 0, 1], k[1, 1, 1, 1] = 2.0, 3.0  # three values: 0, 2, 3
    k[..., 2] = np.arange(18).reshape(3, 3, 2)  # eighteen values
    assert unique_per_channel(k, (-1,)) == 18
    k[..., 2] = 5.0
    assert unique_per_channel(k, (3,)) == 3


def test_channels_on_another_axis_and_several_axes():
    w = np.array([[1.0, 1.0, 1.0], [1.0, 2.0, 3.0]])  # TFLite layout: output channels first
    assert unique_per_channel(w, (0,)) == 3
    assert unique_per_channel(w, (1,)) == 2
    dw = np.zeros((2, 2, 3, 2))  # depthwise kernel: (h, w, in, multiplier), a channel is (in, multiplier)
    dw[:, :, 1, 0] = [[1.0, 2.0], [3.0, 4.0]]
    assert unique_per_channel(dw, (2, 3)) == 4
