"""Losses for fine-tuning: the task loss for labels and the distillation loss against a teacher.

Training under a `tf.distribute.Strategy` averages over the GLOBAL batch, so each
replica needs per-example values it can sum and divide by the global count: the
``*_per_example`` functions return one value per example (shape ``[batch]``) and
compute in float32 even when the model runs in a mixed-precision policy. `task_loss`
and `distillation_loss` are their batch means.
"""
from __future__ import annotations

from typing import Any

import numpy as np


def looks_like_probabilities(out: Any) -> bool:
    """True for a softmax output: non-negative rows summing to one (decided on a probe batch)."""
    out = np.asarray(out, dtype=np.float64)
    return bool(out.ndim >= 2 and out.shape[-1] > 1 and out.min() >= 0 and np.allclose(out.sum(-1), 1.0, atol=1e-3))


def _mean_over_features(values: Any) -> Any:
    """Reduce everything but the batch axis, so an output with several features gives one value per example."""
    import tensorflow as tf

    rank = values.shape.rank
    return values if rank == 1 else tf.reduce_mean(values, axis=list(range(1, rank)))


def _to_logits(out: Any, probabilities: bool) -> Any:
    import tensorflow as tf

    return tf.math.log(tf.clip_by_value(out, 1e-7, 1.0)) if probabilities else out


def task_loss_per_example(y: Any, out: Any, probabilities: bool) -> Any:
    """Cross-entropy for class labels (integer or one-hot), mean squared error otherwise; one value per example."""
    import tensorflow as tf

    out = tf.cast(out, tf.float32)
    y = tf.convert_to_tensor(y)
    classes = out.shape[-1] is not None and out.shape[-1] > 1
    integer = y.dtype.is_integer
    sparse_shape = y.shape.rank == out.shape.rank - 1 or (y.shape.rank == out.shape.rank and y.shape[-1] == 1)
    if classes and integer and sparse_shape:
        labels = tf.reshape(y, tf.shape(out)[:-1])
        per = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=_to_logits(out, probabilities))
        return _mean_over_features(per)
    if classes and y.shape.rank == out.shape.rank and (probabilities or integer):
        per = tf.nn.softmax_cross_entropy_with_logits(labels=tf.cast(y, tf.float32),
                                                      logits=_to_logits(out, probabilities))
        return _mean_over_features(per)
    return _mean_over_features(tf.square(tf.cast(y, tf.float32) - out))


def distillation_per_example(student: Any, teacher: Any, probabilities: bool, temperature: float) -> Any:
    """Hinton's soft-target loss, KL(teacher_T || student_T) * T^2; MSE for non-class outputs."""
    import tensorflow as tf

    student = tf.cast(student, tf.float32)
    teacher = tf.cast(teacher, tf.float32)
    if not probabilities and (student.shape[-1] is None or student.shape[-1] <= 1):
        return _mean_over_features(tf.square(student - teacher))
    log_t = tf.nn.log_softmax(_to_logits(teacher, probabilities) / temperature, axis=-1)
    log_s = tf.nn.log_softmax(_to_logits(student, probabilities) / temperature, axis=-1)
    kl = tf.reduce_sum(tf.exp(log_t) * (log_t - log_s), axis=-1)
    return _mean_over_features(kl) * (temperature**2)


def task_loss(y: Any, out: Any, probabilities: bool) -> Any:
    """The batch mean of `task_loss_per_example`."""
    import tensorflow as tf

    return tf.reduce_mean(task_loss_per_example(y, out, probabilities))


def distillation_loss(student: Any, teacher: Any, probabilities: bool, temperature: float) -> Any:
    """The batch mean of `distillation_per_example`."""
    import tensorflow as tf

    return tf.reduce_mean(distillation_per_example(student, teacher, probabilities, temperature))
