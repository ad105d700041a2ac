"""`finetune`: recover accuracy after compression, optionally distilling from the original.

Pruned models lose accuracy that a few epochs of training win back; learning from the
unpruned model's soft outputs (knowledge distillation) recovers more than labels alone
and also works without labels. The caller's model is never touched: we train a clone.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Optional, Union

import keras
import numpy as np

from kerascompress.data.bundle import DataBundle, _as_arrays
from kerascompress.data.samples import as_list, index_samples, n_samples
from kerascompress.errors import DataError
from kerascompress.metrics.fidelity import correct_per_sample
from kerascompress.models.copy import copy_model
from kerascompress.training.losses import (
    distillation_loss,
    looks_like_probabilities,
    task_loss,
)

Progress = Union[bool, Callable[[str], None]]


# ----------------------------------------------------------------------------- data and losses


def as_arrays(data: Any) -> tuple[Any, Optional[Any]]:
    """(x, y) from a DataBundle (training part), an (x, y) tuple, bare x, or a tf.data.Dataset."""

    if isinstance(data, DataBundle):
        return data.x_train, data.y_train
    if data is None:
        raise DataError("fine-tuning needs data: pass (x, y) arrays, a tf.data.Dataset or a DataBundle")
    return _as_arrays(data)





# ----------------------------------------------------------------------------- fine-tuning


def _reporter(progress: Progress) -> Callable[[str], None]:
    if callable(progress):
        return progress
    return print if progress else (lambda _msg: None)


def finetune(
    model: keras.Model,
    data: Any,
    epochs: int = 1,
    teacher: Optional[keras.Model] = None,
    *,
    batch_size: int = 64,
    learning_rate: float = 1e-4,
    temperature: float = 4.0,
    alpha: float = 0.5,
    max_samples: Optional[int] = None,
    progress: Progress = True,
    seed: int = 0,
    monitor: Any = None,
    patience: int = 1,
    min_delta: float = 0.0005,
    schedule: str = "constant",
    history: Optional[list] = None,
) -> keras.Model:
    """Train a copy of ``model`` for ``epochs`` and return it; ``model`` is not modified.

    With a ``teacher`` (e.g. the unpruned model) the loss mixes the task loss (weight
    ``alpha``) with distillation from the teacher's outputs (weight ``1 - alpha``); with
    a teacher and no labels it is pure distillation. Without a teacher labels are
    required. ``progress``: True prints a bar per epoch, a callable receives one line per
    epoch, False is silent.

    ``monitor``: (x, y) held out of training (never the caller's validation data): after
    each epoch the student is scored on it (accuracy with labels, else top-1 agreement
    with the teacher); training stops once the score has not improved by ``min_delta``
    for ``patience`` epochs, and the best epoch's weights are returned, so ``epochs`` is
    a ceiling, not a fixed length. ``schedule``: "constant" or "cosine" (the learning
    rate decays to zero over ``epochs``). ``history``: a list that receives one dict per
    epoch (loss, monitor score, seconds).
    """
    import tensorflow as tf

    x, y = as_arrays(data)
    if y is None and teacher is None:
        raise DataError("fine-tuning without a teacher needs labels: pass (x, y), or give teacher= to distil")
    n = n_samples(x)
    if max_samples:
        n = min(n, max_samples)
    if n == 0:
        raise DataError("fine-tuning data is empty")
    report = _reporter(progress)
    student = copy_model(model)
    ys = None if y is None else as_list(y) if isinstance(y, (list, tuple, dict)) else [y]
    probe = as_list(student(index_samples(x, np.arange(min(n, 8))), training=False))
    probs = [looks_like_probabilities(keras.ops.convert_to_numpy(p)) for p in probe]
    w_task = 0.0 if ys is None else (alpha if teacher is not None else 1.0)
    w_kd = 0.0 if teacher is None else (1.0 - w_task)
    steps = max(1, n // batch_size)
    if schedule not in ("constant", "cosine"):
        raise DataError(f"schedule must be 'constant' or 'cosine', got {schedule!r}")
    rate = (keras.optimizers.schedules.CosineDecay(learning_rate, steps * max(1, epochs)) if schedule == "cosine"
            else learning_rate)
    optimizer = keras.optimizers.Adam(rate)

    def step(xb, yb):
        tb = as_list(teacher(xb, training=False)) if teacher is not None else [0.0] * len(probs)
        with tf.GradientTape() as tape:
            outs = as_list(student(xb, training=True))
            loss = 0.0
            for i, out in enumerate(outs):
                if w_task:
                    loss += w_task * task_loss(yb[i], out, probs[i])
                if w_kd:
                    loss += w_kd * distillation_loss(out, tb[i], probs[i], temperature)
            loss += sum(student.losses) if student.losses else 0.0
        grads = tape.gradient(loss, student.trainable_variables)
        optimizer.apply_gradients([(g, v) for g, v in zip(grads, student.trainable_variables) if g is not None])
        return loss

    rng = np.random.default_rng(seed)
    # Whole batches only (one graph trace); tracing costs seconds, so tiny runs stay eager.
    run = tf.function(step, reduce_retracing=True) if steps * epochs >= 64 else step
    scorer = _Scorer(monitor, teacher) if monitor is not None else None
    best_score, best_weights, stale = -np.inf, None, 0
    if scorer is not None:  # the starting point competes too: fine-tuning that only hurts is undone
        best_score, best_weights = scorer(student), student.get_weights()
        if history is not None:
            history.append({"epoch": 0, "monitor": best_score})
    for epoch in range(epochs):
        started = time.monotonic()
        order = rng.permutation(n)
        bar = keras.utils.Progbar(steps, verbose=1 if progress is True else 0)
        total = 0.0
        for s in range(steps):
            idx = order[s * batch_size : (s + 1) * batch_size]
            xb = index_samples(x, idx)
            yb = [np.asarray(a)[idx] for a in ys] if ys is not None else [0.0] * len(probs)
            loss = float(run(xb, yb))
            total += loss
            bar.update(s + 1, [("loss", loss)])
        record = {"epoch": epoch + 1, "loss": total / steps, "seconds": round(time.monotonic() - started, 2)}
        if scorer is not None:
            record["monitor"] = score = scorer(student)
            if score > best_score + min_delta:
                best_score, best_weights, stale = score, student.get_weights(), 0
            else:
                stale += 1
        if history is not None:
            history.append(record)
        if progress is not True:
            extra = f", monitor {record['monitor']:.4f}" if "monitor" in record else ""
            report(f"finetune epoch {epoch + 1}/{epochs}: loss {record['loss']:.4f}{extra}")
        if scorer is not None and stale >= patience:
            break
    if best_weights is not None:
        student.set_weights(best_weights)
    return student


class _Scorer:
    """Scores a student on held-out training samples: accuracy with labels, else agreement with the teacher."""

    def __init__(self, monitor: Any, teacher: Optional[keras.Model]) -> None:
        x, y = monitor if isinstance(monitor, tuple) else (monitor, None)
        if y is None and teacher is None:
            raise DataError("a monitor set without labels needs a teacher to agree with")
        self.x = x
        reference = None if y is not None else teacher.predict(x, batch_size=256, verbose=0)
        self.y, self.reference = y, reference

    def __call__(self, student: keras.Model) -> float:
        out = student.predict(self.x, batch_size=256, verbose=0)
        return float(np.mean(correct_per_sample(out, self.y, self.reference)))
