"""How much the model suffers when one channel group is narrowed, before any fine-tuning.

For each group and width the narrowed model's outputs are compared with the original's
on a few hundred training samples: the KL divergence of its class probabilities from
the original's (mean squared error, relative to the outputs' power, for non-class
outputs). Measured, not guessed from weight norms, so groups of different depth and
scale compare fairly; the allocation then spends damage where it buys the most cost.
"""
from __future__ import annotations

from typing import Any, Mapping

import keras
import numpy as np

from kerascompress.data.samples import as_list, n_samples, slice_samples


def _probabilities(out: np.ndarray) -> np.ndarray:
    out = out.astype(np.float64)
    if out.min() >= 0 and np.allclose(out.sum(-1), 1.0, atol=1e-3):
        return np.clip(out, 1e-7, 1.0)
    z = out - out.max(-1, keepdims=True)
    e = np.exp(z)
    return np.clip(e / e.sum(-1, keepdims=True), 1e-7, 1.0)


def output_damage(reference: Any, outputs: Any) -> float:
    """Mean divergence of ``outputs`` from ``reference`` over outputs and samples (0: identical)."""
    total = 0.0
    refs, outs = as_list(reference), as_list(outputs)
    for r, o in zip(refs, outs):
        r, o = np.asarray(r, np.float64), np.asarray(o, np.float64)
        if r.ndim >= 2 and r.shape[-1] > 1:
            p, q = _probabilities(r), _probabilities(o)
            total += float(np.mean(np.sum(p * (np.log(p) - np.log(q)), axis=-1)))
        else:
            total += float(np.mean((r - o) ** 2) / max(np.mean(r ** 2), 1e-12))
    return total / max(len(refs), 1)


class DamageProbe:
    """Measures `output_damage` of narrowed models against the original on fixed samples."""

    def __init__(self, original: keras.Model, x: Any, batch_size: int = 256) -> None:
        self.x = x
        self.batch_size = batch_size
        self.reference = self._outputs(original)
        self.curves: dict[int, dict[int, float]] = {}

    def _outputs(self, model: keras.Model) -> Any:
        """Outputs on the probe samples, called eagerly in batches (no per-model graph tracing)."""
        n = n_samples(self.x)
        parts = [as_list(model(slice_samples(self.x, i, i + self.batch_size), training=False))
                 for i in range(0, n, self.batch_size)]
        outs = [np.concatenate([keras.ops.convert_to_numpy(p[k]) for p in parts]) for k in range(len(parts[0]))]
        return outs[0] if len(outs) == 1 else outs

    def __call__(self, gid: int, width: int, model: keras.Model) -> float:
        damage = output_damage(self.reference, self._outputs(model))
        self.curves.setdefault(gid, {})[int(width)] = damage
        return damage

    def damage(self, gid: int, width: int, full_width: int) -> float:
        """Damage of group ``gid`` at ``width`` (0 at full width; linear between probed widths)."""
        if width >= full_width:
            return 0.0
        known = dict(self.curves.get(gid, {}))
        known[full_width] = 0.0
        ws = sorted(known)
        return float(np.interp(width, ws, [known[w] for w in ws]))

    def as_dict(self) -> dict[str, Mapping[int, float]]:
        return {str(g): dict(sorted(c.items(), reverse=True)) for g, c in self.curves.items()}
