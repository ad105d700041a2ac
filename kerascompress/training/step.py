"""One training step on every replica, and the evaluation functions of a run.

Why the step is written the way it is:

- Loss per GLOBAL batch. Each replica sums its examples' losses and divides by the
  number of examples in the whole global batch (an all-reduced count, so a short last
  batch or an uneven split is weighted right). The Keras 3 TensorFlow optimizer SUMs
  gradients across replicas in ``apply_gradients``, so the update is the global-batch
  mean gradient: N replicas compute what one device computes, and ``learning_rate``
  means the same for any N (``batch_size`` is the global batch).
- No ``model.fit``/``compile`` and no Keras metric objects under the strategy: the
  Keras 3 issues about distributed training (unaggregated gradients, NaN losses and
  metrics: keras-team/keras#19891, #20568, #20601, #21061) live in those code paths and in
  variable aggregation modes. Reporting here is one ``strategy.reduce(SUM)`` of plain
  tensors, and tests compare 1 and 2 replicas.
- The teacher's forward pass runs inside the replica step, on that replica's shard.
- With float16 loss scaling every replica agrees on "gradients finite?" (an all-reduced
  flag) before the optimizer step: Keras' LossScaleOptimizer looks at one replica's
  local gradients only, so one replica's overflow would otherwise be applied (NaN
  weights) or replicas would take different branches.
- Constrained kernels (clustering, masks) are trained through their constraints: the
  kernel's gradient is mapped to the variables the optimizer really updates, and the
  kernel is projected back after each update, inside the replica step.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

from kerascompress.data.samples import as_list
from kerascompress.training.losses import distillation_per_example, task_loss_per_example


class ReplicaStep:
    """The compiled steps of one run: training (distributed) and evaluation (cross-replica)."""

    def __init__(self, strategy: Any, student: Any, teacher: Optional[Any], optimizer: Any,
                 probabilities: list[bool], w_task: float, w_kd: float, temperature: float, loss_scaling: bool,
                 constraints: Sequence[Any], compiled: bool = True) -> None:
        import tensorflow as tf

        self.strategy = strategy
        self.student = student
        self.teacher = teacher
        self.optimizer = optimizer
        self.probabilities = probabilities
        self.w_task, self.w_kd = float(w_task), float(w_kd)
        self.temperature = float(temperature)
        self.loss_scaling = loss_scaling
        self.constraints = list(constraints)
        constrained = {id(c.variable) for c in self.constraints}
        self.free = [v for v in student.trainable_variables if id(v) not in constrained]
        #: What the optimizer updates: free variables, then each constraint's own (centroids, masked kernels).
        self.opt_vars = self.free + [v for c in self.constraints for v in c.trainable()]
        self.compiled = compiled
        self._train_fn: Optional[Any] = None
        wrap = (lambda f: tf.function(f, reduce_retracing=True)) if compiled else (lambda f: f)
        self.evaluate = wrap(self._evaluate)
        self.predict = wrap(lambda x: self.student(x, training=False))

    # ----------------------------------------------------------------- training

    def _loss_sums(self, x: Any, y: Any, outs: list) -> tuple[Any, Any]:
        """Sums over this shard's examples of the task and distillation losses."""
        import tensorflow as tf

        task_sum, kd_sum = tf.constant(0.0), tf.constant(0.0)
        targets = as_list(self.teacher(x, training=False)) if self.w_kd else [None] * len(outs)
        labels = as_list(y) if self.w_task else [None] * len(outs)
        for out, label, target, probs in zip(outs, labels, targets, self.probabilities):
            if self.w_task:
                task_sum += tf.reduce_sum(task_loss_per_example(label, out, probs))
            if self.w_kd:
                kd_sum += tf.reduce_sum(distillation_per_example(out, target, probs, self.temperature))
        return task_sum, kd_sum

    def _replica_train(self, batch: tuple) -> Any:
        import tensorflow as tf

        ctx = tf.distribute.get_replica_context()
        x = batch[0]
        y = batch[1] if len(batch) > 1 else None
        n_local = tf.cast(tf.shape(tf.nest.flatten(x)[0])[0], tf.float32)
        n_global = ctx.all_reduce(tf.distribute.ReduceOp.SUM, n_local)
        with tf.GradientTape() as tape:
            outs = as_list(self.student(x, training=True))
            task_sum, kd_sum = self._loss_sums(x, y, outs)
            loss = (self.w_task * task_sum + self.w_kd * kd_sum) / n_global
            if self.student.losses:  # regularisers count once per step, not once per replica
                loss += tf.nn.scale_regularization_loss(tf.cast(tf.add_n(self.student.losses), tf.float32))
            scaled = self.optimizer.scale_loss(loss)
        grads = tape.gradient(scaled, self.free + [c.variable for c in self.constraints])
        opt_grads = [g if g is not None else tf.zeros_like(v) for g, v in zip(grads, self.free)]
        for c, g in zip(self.constraints, grads[len(self.free):]):
            opt_grads.extend(c.gradients(g if g is not None else tf.zeros(c.variable.shape, c.variable.dtype)))
        if self.loss_scaling:
            opt_grads = _agree_on_finite(ctx, opt_grads)
        self.optimizer.apply_gradients(zip(opt_grads, self.opt_vars))
        for c in self.constraints:
            c.project()
        return tf.stack([loss, task_sum, kd_sum, n_local])

    def _train(self, dist_batch: Any) -> Any:
        import tensorflow as tf

        per_replica = self.strategy.run(self._replica_train, args=(dist_batch,))
        return self.strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    def train(self, dist_dataset: Any) -> Any:
        """The training step for batches of ``dist_dataset``: (loss, task sum, distillation sum, examples).

        Compiled once for the batch spec with an open batch axis: without the signature
        a short last batch would be traced again, which costs as long as a few epochs of
        a small model.
        """
        import tensorflow as tf

        if not self.compiled:
            return self._train
        if self._train_fn is None:
            self._train_fn = tf.function(self._train, input_signature=[dist_dataset.element_spec])
        return self._train_fn

    # ----------------------------------------------------------------- evaluation

    def _evaluate(self, x: Any, y: Any) -> Any:
        """Loss sums and correct-prediction count on one validation batch (the same on every worker)."""
        import tensorflow as tf

        outs = as_list(self.student(x, training=False))
        task_sum, kd_sum = self._loss_sums(x, y, outs)
        n = tf.cast(tf.shape(tf.nest.flatten(x)[0])[0], tf.float32)
        correct = tf.constant(-1.0)
        first = tf.cast(outs[0], tf.float32)
        if y is not None and first.shape[-1] is not None and first.shape[-1] > 1:
            label = tf.convert_to_tensor(as_list(y)[0])
            if label.shape.rank == first.shape.rank:
                label = tf.argmax(label, axis=-1) if label.shape[-1] > 1 else tf.squeeze(label, -1)
            hit = tf.equal(tf.argmax(first, axis=-1), tf.cast(label, tf.int64))
            correct = tf.reduce_sum(tf.cast(hit, tf.float32))
        return tf.stack([task_sum, kd_sum, correct, n])

    def validation_logs(self, x: Any, y: Any, batch_size: int) -> dict[str, float]:
        """``val_loss`` (and its task and distillation parts, ``val_accuracy`` for classes) on (x, y)."""
        import tensorflow as tf

        n = int(np.shape(tf.nest.flatten(x)[0])[0])
        totals = np.zeros(4)
        for start in range(0, n, batch_size):
            rows = slice(start, start + batch_size)
            xb = tf.nest.map_structure(lambda a, rows=rows: a[rows], x)
            yb = None if y is None else tf.nest.map_structure(lambda a, rows=rows: a[rows], y)
            totals += np.asarray(self.evaluate(xb, yb))
        task, kd, correct, count = totals
        logs = {"val_loss": float((self.w_task * task + self.w_kd * kd) / count)}
        if self.w_task:
            logs["val_task_loss"] = float(task / count)
        if self.w_kd:
            logs["val_distill_loss"] = float(kd / count)
        if correct >= 0 and y is not None:
            logs["val_accuracy"] = float(correct / count)
        return logs


def _agree_on_finite(ctx: Any, grads: list) -> list:
    """Non-finite gradients on every replica if any replica has them, so all skip the step together."""
    import tensorflow as tf

    finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in grads])
    bad = ctx.all_reduce(tf.distribute.ReduceOp.SUM, 1.0 - tf.cast(finite, tf.float32))
    poison = tf.where(bad > 0, tf.constant(float("nan")), tf.constant(0.0))
    return [g + tf.cast(poison, g.dtype) for g in grads]
