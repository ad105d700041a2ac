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
The training itself is `finetune`'s loop (strategies, streaming data, checkpoints): the
constraints reach it through its ``constraints`` hook, re-bound to the student's kernels.
"""
from __future__ import annotations

import abc
import dataclasses
from typing import Any, Callable, Mapping, Optional, Sequence

import keras
import numpy as np

from kerascompress.errors import ConfigError
from kerascompress.training.finetune import finetune


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
        """Schedule hook, called eagerly before each step (e.g. to tighten a mask); ``total_steps`` is
        -1 for a stream of unknown length."""

    @abc.abstractmethod
    def bind(self, variable: Any) -> "KernelConstraint":
        """The same constraint on another variable of the same shape (the kernel of a training copy)."""


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
        self._segments, self._frozen = segments, frozen
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

    def bind(self, variable: Any) -> "ClusterConstraint":
        return ClusterConstraint(variable, keras.ops.convert_to_numpy(self.centroids), self._segments, self._frozen)


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

    def bind(self, variable: Any) -> "MaskConstraint":
        return MaskConstraint(variable, keras.ops.convert_to_numpy(self.mask), self.schedule)

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
    teacher: Optional[keras.Model] = None,
    distill_weight: float = 0.0,
    temperature: float = 4.0,
    max_steps_per_epoch: Optional[int] = None,
    freeze_batchnorm: bool = False,
    seed: int = 0,
    progress: Optional[Callable[[str], None]] = None,
    **run: Any,
) -> FinetuneResult:
    """Fine-tune ``model`` in place while every constrained kernel stays compressed.

    ``x``, ``y``: training arrays; or ``x`` any training data `finetune` reads (a
    `DataBundle`, a tf.data.Dataset, a callable of batches) and ``y`` None. Kernels named
    by ``constraints`` (variables of ``model``) are trained only through them (centroids,
    masked gradients); all other trainable weights train normally with Adam. With a
    ``teacher`` and ``distill_weight`` > 0 the task loss (weight ``1 - distill_weight``:
    `finetune`'s ``alpha``) is mixed with Hinton distillation from the teacher's outputs.
    ``freeze_batchnorm`` runs BatchNormalization in inference mode (its statistics stay
    put), safer when fine-tuning data is scarce. ``run``: `finetune`'s settings for how it
    runs (``strategy``, ``callbacks``, ``checkpoint_dir``, ``resume``, ``mixed_precision``...).
    After the last step every constraint is projected once more, so the result is exact.
    """
    positions = {id(v): i for i, v in enumerate(model.weights)}
    missing = [c.variable.path for c in constraints if id(c.variable) not in positions]
    if missing:
        raise ConfigError(f"constraints name variables that are not weights of the model: {missing}")
    slots = [positions[id(c.variable)] for c in constraints]

    def bind(student: keras.Model) -> list[KernelConstraint]:
        weights = student.weights
        return [c.bind(weights[i]) for c, i in zip(constraints, slots)]

    distill = teacher is not None and distill_weight > 0.0
    history: list[dict] = []
    trained = finetune(
        model, x if y is None else (x, y), epochs, teacher if distill else None, batch_size=batch_size,
        learning_rate=learning_rate, alpha=1.0 - float(distill_weight) if distill else 1.0, temperature=temperature,
        max_steps_per_epoch=max_steps_per_epoch, freeze_batchnorm=freeze_batchnorm, seed=seed,
        progress=progress or False, constraints=bind, history=history, **run,
    )
    model.set_weights(trained.get_weights())
    losses = [h["loss"] for h in history if h.get("epoch", 0) > 0]
    return FinetuneResult(
        epochs=epochs,
        steps=sum(int(h.get("steps", 0)) for h in history),
        loss_first_epoch=losses[0] if losses else float("nan"),
        loss_last_epoch=losses[-1] if losses else float("nan"),
        learning_rate=learning_rate,
    )


#: The training settings a constrained pass carries as attributes of the same names.
TRAINING_OPTIONS = ("learning_rate", "batch_size", "freeze_batchnorm", "distill_weight", "max_steps_per_epoch")


def finetune_from_context(model: keras.Model, constraints: Sequence[KernelConstraint], ctx: Any, epochs: int,
                          options: Any, run: Optional[Mapping[str, Any]] = None) -> Optional[FinetuneResult]:
    """Run `constrained_finetune` on a pass context's training part (None when it has none).

    ``options`` is a mapping of training settings, or the pass itself, whose attributes
    named in `TRAINING_OPTIONS` are used. ``run``: how the fine-tuning runs (the pass
    context's strategy, callbacks, checkpoints: ``ctx.fine_tuning(...)``).
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
    kwargs.update(run or {})
    return constrained_finetune(model, data, None, constraints, epochs=epochs, progress=getattr(ctx, "progress", None),
                                **kwargs)
