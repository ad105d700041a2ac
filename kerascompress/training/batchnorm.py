"""Re-estimating BatchNormalization statistics after surgery, without training anything.

Removing channels changes what every later layer sees, so the moving means and
variances a BatchNormalization layer learned no longer describe its inputs; judged
with the stale statistics, a pruned model looks worse than it is. One forward pass in
training mode with momentum 0 replaces the statistics by those of a few thousand real
samples; no weight changes.
"""
from __future__ import annotations

from typing import Any

import keras

from kerascompress.data.samples import n_samples, take
from kerascompress.graph.traversal import all_layers


def recalibrate_batchnorm(model: keras.Model, x: Any, max_samples: int = 2048) -> keras.Model:
    """Replace every BatchNormalization's moving statistics by those of ``x`` (in place; returns ``model``)."""
    layers = [layer for layer in all_layers(model) if isinstance(layer, keras.layers.BatchNormalization)]
    if not layers or n_samples(x) == 0:
        return model
    saved = [layer.momentum for layer in layers]
    try:
        for layer in layers:
            layer.momentum = 0.0
        model(take(x, max_samples), training=True)
    finally:
        for layer, momentum in zip(layers, saved):
            layer.momentum = momentum
    return model
