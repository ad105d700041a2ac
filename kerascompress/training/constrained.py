"""Fine-tuning that keeps compressed kernels compressed.

Ordinary fine-tuning (``model.fit``) would move every weight freely, undoing weight
sharing and refilling pruned zeros. Here each compressed kernel carries a
`KernelConstraint` that decides which variables the optimizer really updates and
how the kernel is rebuilt from them after every step:

- `ClusterConstraint`: the optimizer updates one value per centroid; a centroid's
  gradient is the sum of its members' gradients; the kernel is re-gathered from the
  centroids, so it holds exactly the centroid values (never more than k per group).
- `MaskConstraint`: the kernel is trained with its gradient masked and is multiplied by
  the mask after every step, so the zeros are exact. A schedule may tighten the mask
  between steps (gradual magnitude pruning).

Everything else in the model (biases, BatchNorm, unconstrained layers) trains normally.
This is TensorFlow-backend code, like the rest of kerascompress.
"""
from __future__ import annotations

import abc
import dataclasses
from typing import Any, Callable, Mapping, Optional, Sequence

import keras
import numpy as np

from kerascompress.data.samples import as_list, index_samples, n_samples
from kerascompress.graph.traversal import all_layers
from kerascompress.training.losses import (
    distillation_loss,
    looks_like_probabilities,
    task_loss,
)


class KernelConstraint(abc.ABC):
    """How one kernel variable is trained and kept in its compressed form."""

    def __init__(self, variable: Any) -> None:
        self.variable = variable

    @abc.abstractmethod
    def trainable(self) -> list[Any]:
        """The variables the optimizer updates in place of the kernel."""

    @abc.abstractmethod
    def gradients(self, kernel_grad: Any) -> list[Any]:
        """Gradients for `trainable` from the loss gradient with respect to the kernel."""

    @abc.abstractmethod
    def project(self) -> None:
        """Write the constrained value into the kernel (runs inside the compiled step)."""

    def update(self, step: int, total_steps: int) -> None:
        """Schedule hook, called eagerly before each step (e.g. to tighten a mask)."""


class ClusterConstraint(KernelConstraint):
    """Kernel = centroids[segment]: one trainable value per centroid.

    ``segments`` has the kernel's shape and holds, for every weight, the index of its
    centroid in ``centroids`` (per-channel clustering simply uses disjoint index ranges
    per channel). ``frozen`` marks centroids that must not move (e.g. an exact zero kept
    to preserve sparsity).
    """

    def __init__(self, variable: Any, centroids: np.ndarray, segments: np.ndarray,
                 frozen: Optional[np.ndarray] = None) -> None:
        super().__init__(variable)
        import tensorflow as tf

        segments = np.asarray(segments, dtype=np.int32)
        if segments.shape != tuple(variable.shape):
            raise ValueError(f"segments shape {segments.shape} != kernel shape {tuple(variable.shape)}")
        self.num_segments = int(len(centroids))
        self.segments = tf.constant(segments.reshape(-1))
        self.shape = tuple(variable.shape)
        name = variable.path.replace("/", "_") + "_centroids" if hasattr(variable, "path") else "centroids"
        self.centroids = keras.Variable(np.asarray(centroids, dtype=np.float32), trainable=True, name=name)
        keep = np.ones(self.num_segments, np.float32) if frozen is None else (~np.asarray(frozen, bool)).astype(np.float32)
        self.keep = tf.constant(keep)

    def trainable(self) -> list[Any]:
        return [self.centroids]

    def gradients(self, kernel_grad: Any) -> list[Any]:
        import tensorflow as tf

        flat = tf.reshape(kernel_grad, [-1])
        return [tf.math.unsorted_segment_sum(flat, self.segments, self.num_segments) * self.keep]

    def project(self) -> None:
        import tensorflow as tf

        values = tf.gather(tf.convert_to_tensor(self.centroids), self.segments)
        self.variable.assign(tf.reshape(values, self.shape))


class MaskConstraint(KernelConstraint):
    """Kernel trained under a 0/1 mask; ``schedule(kernel, step, total) -> mask or None``
    may replace the mask between steps (e.g. gradual magnitude pruning)."""

    def __init__(self, variable: Any, mask: np.ndarray,
                 schedule: Optional[Callable[[np.ndarray, int, int], Optional[np.ndarray]]] = None) -> None:
        super().__init__(variable)
        self.mask = keras.Variable(np.asarray(mask, np.float32), trainable=False, name="mask")
        self.schedule = schedule

    def trainable(self) -> list[Any]:
        return [self.variable]

    def gradients(self, kernel_grad: Any) -> list[Any]:
        return [kernel_grad * self.mask]

    def project(self) -> None:
        self.variable.assign(self.variable * self.mask)

    def update(self, step: int, total_steps: int) -> None:
        if self.schedule is None:
            return
        new = self.schedule(keras.ops.convert_to_numpy(self.variable), step, total_steps)
        if new is not None:
            self.mask.assign(np.asarray(new, np.float32))
            self.variable.assign(keras.ops.convert_to_numpy(self.variable) * new)


@dataclasses.dataclass
class FinetuneResult:
    """What constrained fine-tuning did, for the report."""

    epochs: int
    steps: int
    loss_first_epoch: float
    loss_last_epoch: float
    learning_rate: float

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def constrained_finetune(
    model: keras.Model,
    x: Any,
    y: Any,
    constraints: Sequence[KernelConstraint],
    epochs: int = 1,
    batch_size: int = 64,
    learning_rate: float = 1e-4,
    loss: Optional[Callable[[Any, Any], Any]] = None,
    teacher: Optional[keras.Model] = None,
    distill_weight: float = 0.0,
    temperature: float = 4.0,
    max_steps_per_epoch: Optional[int] = None,
    freeze_batchnorm: bool = False,
    seed: int = 0,
    progress: Optional[Callable[[str], None]] = None,
) -> FinetuneResult:
    """Fine-tune ``model`` in place while every constrained kernel stays compressed.

    Kernels named by ``constraints`` are trained only through them (centroids, masked
    gradients); all other trainable weights train normally with Adam. The task loss is
    `kerascompress.finetune.task_loss` (cross-entropy for class labels, MSE otherwise)
    unless ``loss(y, out)`` is given; with a ``teacher`` and ``distill_weight`` > 0 it
    is mixed with Hinton distillation from the teacher's outputs. ``freeze_batchnorm``
    runs BatchNormalization in inference mode (its statistics stay put), which is safer
    when fine-tuning data is scarce. After the last
    step every constraint is projected once more, so the result is exact.
    """
    import tensorflow as tf


    rng = np.random.default_rng(seed)
    n = n_samples(x)
    steps_per_epoch = max(1, -(-n // batch_size))
    if max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, max_steps_per_epoch)
    total = steps_per_epoch * max(0, epochs)
    ys = as_list(y) if isinstance(y, (list, tuple, dict)) else [y]
    probe = as_list(model(index_samples(x, np.arange(min(n, 8))), training=False))
    probs = [looks_like_probabilities(keras.ops.convert_to_numpy(p)) for p in probe]
    alpha = float(distill_weight) if teacher is not None else 0.0

    frozen_bn: list[Any] = []
    if freeze_batchnorm:
        for layer in all_layers(model):
            if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable:
                layer.trainable = False  # Keras 3: a frozen BatchNormalization runs in inference mode
                frozen_bn.append(layer)
    try:
        constrained_ids = {id(c.variable) for c in constraints}
        free = [v for v in model.trainable_variables if id(v) not in constrained_ids]
        kernels = [c.variable for c in constraints]
        opt_vars = list(free) + [v for c in constraints for v in c.trainable()]
        optimizer = keras.optimizers.Adam(learning_rate)
        optimizer.build(opt_vars)

        @tf.function(reduce_retracing=True)
        def train_step(xb: Any, yb: Any, tb: Any) -> Any:
            with tf.GradientTape() as tape:
                outs = as_list(model(xb, training=True))
                value = 0.0
                for i, out in enumerate(outs):
                    task = loss(yb[i], out) if loss is not None else task_loss(yb[i], out, probs[i])
                    value += (1.0 - alpha) * task
                    if alpha > 0.0:
                        value += alpha * distillation_loss(out, tb[i], probs[i], temperature)
                if model.losses:
                    value = value + tf.add_n(model.losses)
            grads = tape.gradient(value, free + kernels)
            free_grads = grads[: len(free)]
            kernel_grads = grads[len(free):]
            opt_grads = [g if g is not None else tf.zeros_like(v) for g, v in zip(free_grads, free)]
            for c, g in zip(constraints, kernel_grads):
                g = g if g is not None else tf.zeros(c.variable.shape, c.variable.dtype)
                opt_grads.extend(c.gradients(g))
            optimizer.apply_gradients(zip(opt_grads, opt_vars))
            for c in constraints:
                c.project()
            return value

        losses_per_epoch: list[float] = []
        step = 0
        for epoch in range(max(0, epochs)):
            order = rng.permutation(n)
            epoch_losses = []
            for b in range(steps_per_epoch):
                idx = order[b * batch_size:(b + 1) * batch_size]
                if len(idx) == 0:
                    break
                for c in constraints:
                    c.update(step, total)
                xb = index_samples(x, idx)
                yb = [np.asarray(a)[idx] for a in ys]
                tb = as_list(teacher(xb, training=False)) if alpha > 0.0 else [0.0] * len(probs)
                epoch_losses.append(float(train_step(xb, yb, tb)))
                step += 1
            losses_per_epoch.append(float(np.mean(epoch_losses)) if epoch_losses else float("nan"))
            if progress:
                progress(f"constrained fine-tuning: epoch {epoch + 1}/{epochs}, loss {losses_per_epoch[-1]:.4f}")
        for c in constraints:
            c.update(total, total)
            c.project()
    finally:
        for layer in frozen_bn:
            layer.trainable = True
    return FinetuneResult(
        epochs=epochs,
        steps=step,
        loss_first_epoch=losses_per_epoch[0] if losses_per_epoch else float("nan"),
        loss_last_epoch=losses_per_epoch[-1] if losses_per_epoch else float("nan"),
        learning_rate=learning_rate,
    )


#: The training settings a constrained pass carries as attributes of the same names.
TRAINING_OPTIONS = ("learning_rate", "batch_size", "freeze_batchnorm", "distill_weight", "max_steps_per_epoch")


def finetune_from_context(model: keras.Model, constraints: Sequence[KernelConstraint], ctx: Any, epochs: int,
                          options: Any) -> Optional[FinetuneResult]:
    """Run `constrained_finetune` on a pass context's training split (None when it has none).

    ``options`` is a mapping of training settings, or the pass itself, whose attributes
    named in `TRAINING_OPTIONS` are used.
    """
    data = getattr(ctx, "data", None)
    if epochs <= 0 or data is None or not data.can_train:
        return None
    if not isinstance(options, Mapping):
        options = {name: getattr(options, name) for name in TRAINING_OPTIONS}
    kwargs = dict(options)
    kwargs.setdefault("seed", getattr(ctx, "seed", 0))
    if kwargs.get("distill_weight", 0.0) > 0 and "teacher" not in kwargs:
        kwargs["teacher"] = getattr(ctx, "teacher", None)
    return constrained_finetune(model, data.x_train, data.y_train, constraints, epochs=epochs,
                                progress=getattr(ctx, "progress", None), **kwargs)
