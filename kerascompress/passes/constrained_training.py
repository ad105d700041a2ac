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


def infer_loss(model: keras.Model, y: np.ndarray) -> Callable[[Any, Any], Any]:
    """A loss for ``model`` trained on labels ``y`` when the caller gives none.

    Integer class labels -> sparse cross-entropy (on probabilities when the model ends in
    softmax, on logits otherwise); one-hot labels -> categorical cross-entropy; anything
    else -> mean squared error.
    """
    out_dim = model.outputs[0].shape[-1]
    y = np.asarray(y)
    from_logits = not _ends_in_softmax(model)
    if np.issubdtype(y.dtype, np.integer) and (y.ndim == 1 or y.shape[-1] == 1) and (out_dim or 1) > 1:
        return keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits)
    if y.ndim >= 2 and out_dim and y.shape[-1] == out_dim and out_dim > 1 and np.allclose(y.sum(-1), 1):
        return keras.losses.CategoricalCrossentropy(from_logits=from_logits)
    return keras.losses.MeanSquaredError()


def _ends_in_softmax(model: keras.Model) -> bool:
    history = getattr(model.outputs[0], "_keras_history", None)
    layer = history[0] if history else model.layers[-1]
    activation = getattr(layer, "activation", None)
    if activation is not None and getattr(activation, "__name__", "") == "softmax":
        return True
    return type(layer).__name__ == "Softmax"


def _take(x: Any, idx: np.ndarray) -> Any:
    if isinstance(x, (list, tuple)):
        return [np.asarray(a)[idx] for a in x]
    if isinstance(x, dict):
        return {k: np.asarray(v)[idx] for k, v in x.items()}
    return np.asarray(x)[idx]


def _length(x: Any) -> int:
    if isinstance(x, (list, tuple)):
        return len(x[0])
    if isinstance(x, dict):
        return len(next(iter(x.values())))
    return len(x)


def constrained_finetune(
    model: keras.Model,
    x: Any,
    y: np.ndarray,
    constraints: Sequence[KernelConstraint],
    epochs: int = 1,
    batch_size: int = 64,
    learning_rate: float = 1e-4,
    loss: Optional[Callable[[Any, Any], Any]] = None,
    teacher: Optional[keras.Model] = None,
    distill_weight: float = 0.0,
    max_steps_per_epoch: Optional[int] = None,
    freeze_batchnorm: bool = False,
    seed: int = 0,
    progress: Optional[Callable[[str], None]] = None,
) -> FinetuneResult:
    """Fine-tune ``model`` in place while every constrained kernel stays compressed.

    Kernels named by ``constraints`` are trained only through them (centroids, masked
    gradients); all other trainable weights train normally with Adam. With a ``teacher``
    and ``distill_weight`` > 0 the loss mixes in the teacher's outputs (KL divergence
    for probability outputs, MSE otherwise), which helps when labels are few. After the
    last step every constraint is projected once more, so the result is exact.
    """
    import tensorflow as tf

    loss_fn = loss or infer_loss(model, y)
    probabilities = _ends_in_softmax(model)
    rng = np.random.default_rng(seed)
    n = _length(x)
    steps_per_epoch = max(1, -(-n // batch_size))
    if max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, max_steps_per_epoch)
    total = steps_per_epoch * max(0, epochs)

    frozen_bn: list[Any] = []
    if freeze_batchnorm:
        for layer in _all_layers(model):
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
        alpha = float(distill_weight) if teacher is not None else 0.0

        @tf.function(reduce_retracing=True)
        def train_step(xb: Any, yb: Any, tb: Any) -> Any:
            with tf.GradientTape() as tape:
                out = model(xb, training=True)
                value = loss_fn(yb, out)
                if alpha > 0.0:
                    if probabilities:
                        soft = keras.losses.KLDivergence()(tb, out)
                    else:
                        soft = keras.losses.MeanSquaredError()(tb, out)
                    value = (1.0 - alpha) * value + alpha * soft
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
                xb = _take(x, idx)
                yb = np.asarray(y)[idx]
                tb = teacher(xb, training=False) if alpha > 0.0 else tf.zeros(())
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


def _all_layers(model: keras.Model) -> list[Any]:
    """Every layer, descending into nested models."""
    out = []
    for layer in model.layers:
        out.append(layer)
        if hasattr(layer, "layers") and isinstance(layer, keras.Model):
            out.extend(_all_layers(layer))
    return out


def finetune_from_context(model: keras.Model, constraints: Sequence[KernelConstraint], ctx: Any, epochs: int,
                          options: Mapping[str, Any]) -> Optional[FinetuneResult]:
    """Run `constrained_finetune` on a pass context's training split (None when it has none)."""
    data = getattr(ctx, "data", None)
    if epochs <= 0 or data is None or not data.can_train:
        return None
    kwargs = dict(options)
    kwargs.setdefault("seed", getattr(ctx, "seed", 0))
    if kwargs.get("distill_weight", 0.0) > 0 and "teacher" not in kwargs:
        kwargs["teacher"] = getattr(ctx, "teacher", None)
    return constrained_finetune(model, data.x_train, data.y_train, constraints, epochs=epochs,
                                progress=getattr(ctx, "progress", None), **kwargs)
