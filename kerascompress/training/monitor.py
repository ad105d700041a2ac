"""Early stopping on held-out training samples, keeping the best epoch's weights.

A search fine-tunes many candidates and cannot afford a fixed, generous number of
epochs: it gives a ceiling and stops once the score on samples held out of training
has not improved by ``min_delta`` for ``patience`` epochs. The starting point competes
too (epoch 0), so fine-tuning that only hurts is undone. The best weights and score
are variables, so a checkpoint carries them and a resumed run decides as the
uninterrupted one would.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np

from kerascompress.data.samples import index_samples, n_samples
from kerascompress.errors import DataError
from kerascompress.metrics.fidelity import correct_per_sample


class HeldOutMonitor:
    """Scores a student on ``monitor`` = (x, y) or x: accuracy with labels, else top-1 agreement with the teacher."""

    def __init__(self, monitor: Any, teacher: Any, weights: list, patience: int, min_delta: float) -> None:
        import tensorflow as tf

        x, y = monitor if isinstance(monitor, tuple) else (monitor, None)
        if y is None and teacher is None:
            raise DataError("a monitor set without labels needs a teacher to agree with")
        self.x, self.y = x, y
        self.reference = None if y is not None else teacher.predict(x, batch_size=256, verbose=0)
        self.patience, self.min_delta = int(patience), float(min_delta)
        self.best_score = tf.Variable(-np.inf, dtype=tf.float64, trainable=False)
        self.stale = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.best_weights = [tf.Variable(_value(w), trainable=False) for w in weights]
        self.started = tf.Variable(False, trainable=False)

    def state(self) -> dict[str, Any]:
        """The trackables a checkpoint must hold for a resumed run to decide the same."""
        return {"monitor_best": self.best_score, "monitor_stale": self.stale, "monitor_started": self.started,
                "monitor_weights": list(self.best_weights)}

    def score(self, predict: Callable[[Any], Any]) -> float:
        n = n_samples(self.x)
        outs = [predict(index_samples(self.x, np.arange(i, min(n, i + 256)))) for i in range(0, n, 256)]
        out = _concat(outs)
        return float(np.mean(correct_per_sample(out, self.y, self.reference)))

    def begin(self, predict: Callable[[Any], Any], weights: list) -> Optional[float]:
        """Score the starting point (once per run, not again on resume); its value, or None when resumed."""
        if bool(self.started.numpy()):
            return None
        score = self.score(predict)
        self._keep(score, weights)
        self.started.assign(True)
        return score

    def after_epoch(self, predict: Callable[[Any], Any], weights: list) -> tuple[float, bool]:
        """(this epoch's score, whether to stop now)."""
        score = self.score(predict)
        if score > float(self.best_score.numpy()) + self.min_delta:
            self._keep(score, weights)
            self.stale.assign(0)
        else:
            self.stale.assign_add(1)
        return score, int(self.stale.numpy()) >= self.patience

    def _keep(self, score: float, weights: list) -> None:
        self.best_score.assign(score)
        for keep, w in zip(self.best_weights, weights):
            keep.assign(_value(w))

    def restore_best(self, weights: list) -> None:
        for w, keep in zip(weights, self.best_weights):
            w.assign(keep.read_value())


def _value(variable: Any) -> Any:
    """The current value of a (possibly distributed) Keras variable, as one tensor."""
    import keras

    return keras.ops.convert_to_tensor(variable)


def _concat(batches: list) -> Any:
    first = batches[0]
    if isinstance(first, (list, tuple)):
        return [np.concatenate([np.asarray(b[i]) for b in batches]) for i in range(len(first))]
    if isinstance(first, dict):
        return [np.concatenate([np.asarray(b[k]) for b in batches]) for k in first]
    return np.concatenate([np.asarray(b) for b in batches])
