"""`finetune`: recover accuracy after compression, optionally distilling from the original.

Pruned models lose accuracy that a few epochs of training win back; learning from the
unpruned model's soft outputs (knowledge distillation) recovers more than labels alone
and also works without labels. The caller's model is never touched: we train a clone.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Union

import keras
import numpy as np

from kerascompress.errors import DataError

Progress = Union[bool, Callable[[str], None]]


# ----------------------------------------------------------------------------- data and losses


def as_arrays(data: Any) -> tuple[Any, Optional[Any]]:
    """(x, y) from a DataBundle (training part), an (x, y) tuple, bare x, or a tf.data.Dataset."""
    from kerascompress.data import DataBundle, _as_arrays

    if isinstance(data, DataBundle):
        return data.x_train, data.y_train
    if data is None:
        raise DataError("fine-tuning needs data: pass (x, y) arrays, a tf.data.Dataset or a DataBundle")
    return _as_arrays(data)


def _n(x: Any) -> int:
    if isinstance(x, (list, tuple)):
        return len(x[0])
    if isinstance(x, dict):
        return len(next(iter(x.values())))
    return len(x)


def _index(x: Any, idx: np.ndarray) -> Any:
    if x is None:
        return None
    if isinstance(x, (list, tuple)):
        return [np.asarray(a)[idx] for a in x]
    if isinstance(x, dict):
        return {k: np.asarray(v)[idx] for k, v in x.items()}
    return np.asarray(x)[idx]


def _as_list(out: Any) -> list:
    if isinstance(out, dict):
        return list(out.values())
    return list(out) if isinstance(out, (list, tuple)) else [out]


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


# ----------------------------------------------------------------------------- fine-tuning


def clone(model: keras.Model) -> keras.Model:
    """An independent copy of ``model`` (same structure, copied weights)."""
    try:
        copy = keras.models.clone_model(model)
    except Exception:  # noqa: BLE001 - fall back to our own rebuild (flattens sub-models)
        from kerascompress.graph.model_graph import ModelGraph

        return ModelGraph.from_keras(model).to_keras()
    copy.set_weights(model.get_weights())
    return copy


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
) -> keras.Model:
    """Train a copy of ``model`` for ``epochs`` and return it; ``model`` is not modified.

    With a ``teacher`` (e.g. the unpruned model) the loss mixes the task loss (weight
    ``alpha``) with distillation from the teacher's outputs (weight ``1 - alpha``); with
    a teacher and no labels it is pure distillation. Without a teacher labels are
    required. ``progress``: True prints a bar per epoch, a callable receives one line per
    epoch, False is silent.
    """
    import tensorflow as tf

    x, y = as_arrays(data)
    if y is None and teacher is None:
        raise DataError("fine-tuning without a teacher needs labels: pass (x, y), or give teacher= to distil")
    n = _n(x)
    if max_samples:
        n = min(n, max_samples)
    if n == 0:
        raise DataError("fine-tuning data is empty")
    report = _reporter(progress)
    student = clone(model)
    ys = None if y is None else _as_list(y) if isinstance(y, (list, tuple, dict)) else [y]
    probe = _as_list(student(_index(x, np.arange(min(n, 8))), training=False))
    probs = [looks_like_probabilities(keras.ops.convert_to_numpy(p)) for p in probe]
    w_task = 0.0 if ys is None else (alpha if teacher is not None else 1.0)
    w_kd = 0.0 if teacher is None else (1.0 - w_task)
    optimizer = keras.optimizers.Adam(learning_rate)

    def step(xb, yb, tb):
        with tf.GradientTape() as tape:
            outs = _as_list(student(xb, training=True))
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
    steps = max(1, n // batch_size)
    run = tf.function(step, reduce_retracing=True) if steps * epochs >= 64 else step
    for epoch in range(epochs):
        order = rng.permutation(n)
        bar = keras.utils.Progbar(steps, verbose=1 if progress is True else 0)
        total = 0.0
        for s in range(steps):
            idx = order[s * batch_size : (s + 1) * batch_size]
            xb = _index(x, idx)
            yb = [np.asarray(a)[idx] for a in ys] if ys is not None else [0.0] * len(probs)
            tb = _as_list(teacher(xb, training=False)) if teacher is not None else [0.0] * len(probs)
            loss = float(run(xb, yb, tb))
            total += loss
            bar.update(s + 1, [("loss", loss)])
        if progress is not True:
            report(f"finetune epoch {epoch + 1}/{epochs}: loss {total / steps:.4f}")
    return student
