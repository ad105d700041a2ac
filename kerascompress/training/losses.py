"""Losses for fine-tuning: the task loss for labels and the distillation loss against a teacher."""
from __future__ import annotations

from typing import Any

import keras
import numpy as np


def looks_like_probabilities(out: np.ndarray) -> bool:
    """True for a softmax output: non-negative rows summing to one."""
    out = np.asarray(out)
    return out.ndim >= 2 and out.shape[-1] > 1 and out.min() >= 0 and np.allclose(out.sum(-1), 1.0, atol=1e-3)


def task_loss(y: Any, out: Any, probabilities: bool) -> Any:
    """Cross-entropy for class labels (integer or one-hot), mean squared error otherwise."""
    from keras import ops

    y = ops.convert_to_tensor(y)
    integer = "int" in str(y.dtype) and (len(y.shape) == len(out.shape) - 1 or (y.shape[-1] == 1 and out.shape[-1] > 1))
    if integer and out.shape[-1] > 1:
        y = ops.reshape(y, ops.shape(out)[:-1])
        return ops.mean(keras.losses.sparse_categorical_crossentropy(y, out, from_logits=not probabilities))
    if tuple(y.shape[1:]) == tuple(out.shape[1:]) and out.shape[-1] > 1 and (probabilities or "int" in str(y.dtype)):
        return ops.mean(keras.losses.categorical_crossentropy(ops.cast(y, out.dtype), out, from_logits=not probabilities))
    return ops.mean(ops.square(ops.cast(y, out.dtype) - out))


def distillation_loss(student: Any, teacher: Any, probabilities: bool, temperature: float) -> Any:
    """Hinton's soft-target loss (KL at temperature T, scaled by T^2); MSE for non-class outputs."""
    from keras import ops

    if not probabilities and student.shape[-1] <= 1:
        return ops.mean(ops.square(student - teacher))
    to_logits = (lambda p: ops.log(ops.clip(p, 1e-7, 1.0))) if probabilities else (lambda z: z)  # noqa: E731
    t = ops.softmax(to_logits(teacher) / temperature, axis=-1)
    log_s = ops.log_softmax(to_logits(student) / temperature, axis=-1)
    log_t = ops.log(ops.clip(t, 1e-7, 1.0))
    return ops.mean(ops.sum(t * (log_t - log_s), axis=-1)) * temperature**2
