"""`finetune`: recover accuracy after compression, optionally distilling from the original.

Pruned models lose accuracy that a few epochs of training win back; learning from the
unpruned model's soft outputs (knowledge distillation) recovers more than labels alone
and also works without labels. The caller's model is never touched: we train a copy.

Fine-tuning is where a compression run spends its time (hours for a large model on a
real data set), so the loop scales out: it runs under any `tf.distribute.Strategy`
(`step.py` explains the replica step), streams its data (`batches.py`), checkpoints so
a killed run continues where it stopped (`checkpoint.py`), calls Keras callbacks, and
can compute in mixed precision (`precision.py`).
"""
from __future__ import annotations

import hashlib
import time
from typing import Any, Callable, Optional, Sequence, Union

import keras
import numpy as np

from kerascompress.data.samples import as_list
from kerascompress.errors import ConfigError, DataError, ResumeError
from kerascompress.training import clones, precision, strategies
from kerascompress.training.batches import as_batches
from kerascompress.training.checkpoint import Checkpointer, Position, refuse_overwrite
from kerascompress.training.losses import looks_like_probabilities
from kerascompress.training.monitor import HeldOutMonitor
from kerascompress.training.step import ReplicaStep

Progress = Union[bool, Callable[[str], None]]

#: Validation examples kept in memory at most (``validation_data`` is materialised).
VALIDATION_SAMPLES = 2048
#: Below this many steps a run stays eager: compiling the step costs seconds, more than it saves.
COMPILE_FROM_STEPS = 64


def finetune(
    model: keras.Model,
    data: Any,
    epochs: int = 1,
    teacher: Optional[keras.Model] = None,
    *,
    strategy: Any = None,
    batch_size: Optional[int] = None,
    learning_rate: float = 1e-4,
    temperature: float = 4.0,
    alpha: float = 0.5,
    max_samples: Optional[int] = None,
    max_steps_per_epoch: Optional[int] = None,
    progress: Progress = True,
    seed: int = 0,
    monitor: Any = None,
    patience: int = 1,
    min_delta: float = 0.0005,
    schedule: str = "constant",
    history: Optional[list] = None,
    validation_data: Any = None,
    validation_samples: int = VALIDATION_SAMPLES,
    callbacks: Optional[Sequence[keras.callbacks.Callback]] = None,
    checkpoint_dir: Any = None,
    resume: bool = False,
    checkpoint_every: Optional[int] = None,
    mixed_precision: Optional[str] = None,
    sync_batchnorm: Optional[bool] = None,
    freeze_batchnorm: bool = False,
    constraints: Optional[Callable[[keras.Model], Sequence[Any]]] = None,
) -> keras.Model:
    """Train a copy of ``model`` for ``epochs`` and return it; ``model`` is not modified.

    Loss: ``alpha * task + (1 - alpha) * distillation`` with a ``teacher`` (Hinton's soft
    targets at ``temperature``; pure distillation when the data has no labels), the task
    loss alone without one. ``alpha`` is the weight of the task loss everywhere in
    kerascompress; a pass's ``distill_weight`` is ``1 - alpha``.

    Data: ``data`` may be ``(x, y)`` or ``x`` arrays, a `DataBundle`, a tf.data.Dataset,
    a callable returning a Dataset or an iterator of batches per epoch (given the epoch
    number if it takes an argument), or a generator object (one epoch); streams are
    read, never loaded whole. ``batch_size`` is the GLOBAL batch, split across replicas
    (None: 64, or a batched stream's own batches); ``learning_rate`` applies to it
    unchanged. ``max_samples``: examples per epoch at most; ``max_steps_per_epoch``: steps.

    Scaling out: ``strategy`` is any `tf.distribute.Strategy` (default: the current one,
    a single device); the student is built and trained under its scope, the teacher runs
    inside each replica's step, and with several replicas BatchNormalization is
    synchronised (``sync_batchnorm``, default on when replicas > 1). ``mixed_precision``:
    None, "mixed_bfloat16", or "mixed_float16" (GPU only; adds dynamic loss scaling).

    ``monitor``: (x, y) held out of training: after each epoch the student is scored on
    it (accuracy with labels, else top-1 agreement with the teacher; epoch 0 is the
    starting point); training stops once the score has not improved by ``min_delta``
    for ``patience`` epochs, and the best epoch's weights are returned. ``schedule``:
    "constant" or "cosine" (the learning rate decays to zero over ``epochs``).
    ``history``: a list receiving one dict per epoch (epoch, loss, seconds, monitor, and
    ``val_*`` with ``validation_data``). ``validation_data``: its first
    ``validation_samples`` examples give ``val_loss`` (and ``val_accuracy``) to callbacks.

    Long runs: ``checkpoint_dir`` receives a checkpoint at every epoch end and every
    ``checkpoint_every`` steps; ``resume=True`` continues from the newest one (the same
    settings required; an empty directory starts afresh). ``callbacks``: Keras callbacks
    (EarlyStopping, CSVLogger, TensorBoard, LR schedulers...); ``model.stop_training`` set
    by one ends training. ``constraints(student)`` returns `KernelConstraint` objects built
    on the student's kernels (clustering, masks), kept exact through training.
    ``freeze_batchnorm``: BatchNormalization statistics stay put. ``progress``: True shows a
    progress bar, a callable receives one line per epoch, False is silent.

    The returned model carries ``.history`` (a keras History of this call's epochs).
    """
    _check_arguments(epochs, learning_rate, temperature, alpha, schedule, patience)
    if resume and checkpoint_dir is None:
        raise ResumeError("resume=True needs checkpoint_dir: the folder the interrupted run wrote its checkpoints to")
    strategy = strategies.resolve(strategy)
    policy = precision.resolve(mixed_precision, strategy)
    replicas = strategy.num_replicas_in_sync
    batches = as_batches(data, model, seed=seed, batch_size=batch_size, max_samples=max_samples)
    if not batches.has_labels and teacher is None:
        raise DataError("fine-tuning without a teacher needs labels: pass (x, y), or give teacher= to distil")
    x_probe, _ = batches.samples(8)
    probabilities = [looks_like_probabilities(keras.ops.convert_to_numpy(p))
                     for p in as_list(model(x_probe, training=False))]
    w_task = 0.0 if not batches.has_labels else (alpha if teacher is not None else 1.0)
    w_kd = 0.0 if teacher is None else 1.0 - w_task
    validation = _validation(validation_data, model, seed, validation_samples, w_task)
    steps_per_epoch = batches.steps_per_epoch(max_steps_per_epoch)
    if schedule == "cosine" and steps_per_epoch is None:
        raise ConfigError("schedule='cosine' needs the number of steps per epoch, which a stream of unknown length "
                          "does not tell: give max_steps_per_epoch, or use schedule='constant'")
    total_steps = steps_per_epoch * epochs if steps_per_epoch is not None else -1  # -1: unknown length

    sync = replicas > 1 if sync_batchnorm is None else bool(sync_batchnorm)
    with strategy.scope():
        student = clones.student(model, policy, sync, freeze_batchnorm)
        clones.reseed(student, seed)
        rate = (keras.optimizers.schedules.CosineDecay(learning_rate, max(1, total_steps)) if schedule == "cosine"
                else learning_rate)
        optimizer: Any = keras.optimizers.Adam(rate)
        if precision.needs_loss_scaling(policy):
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        kernel_constraints = list(constraints(student)) if constraints is not None else []
        placed_teacher = clones.teacher(teacher, replicas) if teacher is not None else None
        compiled = replicas > 1 or total_steps < 0 or total_steps >= COMPILE_FROM_STEPS
        step = ReplicaStep(strategy, student, placed_teacher, optimizer, probabilities, w_task, w_kd, temperature,
                           precision.needs_loss_scaling(policy), kernel_constraints, compiled)
        optimizer.build(step.opt_vars)
    student.optimizer = optimizer  # for callbacks that read or set the learning rate
    held_out = HeldOutMonitor(monitor, teacher, student.weights, patience, min_delta) if monitor is not None else None

    position, records = Position(), []
    checkpointer = None
    if checkpoint_dir is not None:
        fingerprint = {"seed": seed, "batch_size": batch_size, "max_samples": max_samples,
                       "max_steps_per_epoch": max_steps_per_epoch, "epochs": epochs, "learning_rate": learning_rate,
                       "schedule": schedule, "alpha": alpha, "temperature": temperature, "distilled": w_kd > 0,
                       "mixed_precision": policy, "model": model_signature(student), "data_order": 1}
        checkpointer = Checkpointer(checkpoint_dir, strategy, student.variables, optimizer, fingerprint,
                                    held_out.state() if held_out is not None else None)
        if not resume:
            refuse_overwrite(checkpoint_dir)
        restored = checkpointer.restore() if resume else None
        if restored is not None:
            position, records = restored
    if history is not None:
        history.extend(records)

    run = _Run(strategy, student, step, batches, checkpointer, held_out, records, history, epochs, steps_per_epoch,
               total_steps, kernel_constraints, replicas, checkpoint_every, max_steps_per_epoch)
    callback_list = keras.callbacks.CallbackList(
        list(callbacks or []) + ([_LineReporter(progress, epochs)] if callable(progress) else []),
        add_history=True, add_progbar=progress is True, model=student,
        verbose=1 if progress is True else 0, epochs=epochs, steps=steps_per_epoch,
    )
    run.train(position, callback_list, validation, batch_size)
    for c in kernel_constraints:
        c.update(max(run.position.global_step, 0), total_steps)
        c.project()
    if held_out is not None:
        held_out.restore_best(student.weights)
    result = clones.plain_copy(student, model)
    result.history = next(c for c in callback_list.callbacks if isinstance(c, keras.callbacks.History))
    return result


class _Run:
    """The epoch loop of one `finetune` call: steps, callbacks, monitor, checkpoints, stopping."""

    def __init__(self, strategy: Any, student: keras.Model, step: ReplicaStep, batches: Any,
                 checkpointer: Optional[Checkpointer], held_out: Optional[HeldOutMonitor], records: list,
                 history: Optional[list], epochs: int, steps_per_epoch: Optional[int], total_steps: int,
                 constraints: list, replicas: int, checkpoint_every: Optional[int],
                 max_steps_per_epoch: Optional[int]) -> None:
        self.strategy, self.student, self.step, self.batches = strategy, student, step, batches
        self.checkpointer, self.held_out = checkpointer, held_out
        self.records, self.history = records, history
        self.epochs, self.steps_per_epoch, self.total_steps = epochs, steps_per_epoch, total_steps
        self.constraints, self.replicas = constraints, replicas
        self.checkpoint_every, self.max_steps_per_epoch = checkpoint_every, max_steps_per_epoch
        self.position = Position()
        self.epoch_steps = 0
        self.agree = _stop_agreement(strategy) if strategies.worker(strategy)[2] > 1 else None

    def _record(self, record: dict) -> None:
        self.records.append(record)
        if self.history is not None:
            self.history.append(record)

    def _save(self) -> None:
        if self.checkpointer is not None:
            self.checkpointer.save(self.position, self.records)

    def train(self, position: Position, callbacks: Any, validation: Optional[tuple], batch_size: Optional[int]) -> None:
        self.position = position
        student = self.student
        student.stop_training = False
        callbacks.on_train_begin()
        if self.held_out is not None:
            start = self.held_out.begin(self.step.predict, student.weights)
            if start is not None:
                self._record({"epoch": 0, "monitor": start})
        logs: dict[str, Any] = {}
        if position.step < 0:  # a finished run, resumed: nothing left to do
            callbacks.on_train_end(logs)
            return
        for epoch in range(position.epoch, self.epochs):
            logs = self._epoch(epoch, callbacks, validation, batch_size)
            stop = bool(student.stop_training)
            if self.held_out is not None:
                logs["monitor"], patience_over = self.held_out.after_epoch(self.step.predict, student.weights)
                stop = stop or patience_over
            self._record({"epoch": epoch + 1, **logs, "steps": self.epoch_steps})
            callbacks.on_epoch_end(epoch, logs)
            stop = stop or bool(student.stop_training)
            if self.agree is not None:
                import tensorflow as tf

                stop = bool(self.agree(tf.constant(float(stop))).numpy() > 0)
            last = stop or epoch + 1 == self.epochs
            self.position = Position(epoch + 1, -1 if last else 0, self.position.global_step)
            self._save()
            if stop:
                break
        callbacks.on_train_end(logs)

    def _epoch(self, epoch: int, callbacks: Any, validation: Optional[tuple], batch_size: Optional[int]) -> dict:
        position = self.position
        skip = position.step if epoch == position.epoch else 0
        loss_sum, examples = (position.loss_sum, position.examples) if skip else (0.0, 0.0)
        dataset = self.batches.epoch(epoch, skip, min_batch=self.replicas, max_steps=self.max_steps_per_epoch)
        callbacks.on_epoch_begin(epoch)
        started = time.perf_counter()
        dist_dataset = self.strategy.experimental_distribute_dataset(dataset)
        train_step = self.step.train(dist_dataset)
        done = skip
        for dist_batch in dist_dataset:
            callbacks.on_train_batch_begin(done)
            for c in self.constraints:
                c.update(self.position.global_step, self.total_steps)
            loss, _, _, n = (float(v) for v in np.asarray(train_step(dist_batch)))
            loss_sum += loss * n
            examples += n
            done += 1
            self.position = Position(epoch, done, self.position.global_step + 1, loss_sum, examples)
            callbacks.on_train_batch_end(done - 1, {"loss": loss_sum / examples})
            if self.checkpoint_every and self.position.global_step % self.checkpoint_every == 0:
                self._save()
            if self.student.stop_training:
                break
        self.epoch_steps = done - skip
        if examples == 0:
            raise DataError(f"epoch {epoch + 1} produced no batches: the data is empty or smaller than one example "
                            f"per replica")
        logs: dict[str, Any] = {"loss": loss_sum / examples, "seconds": round(time.perf_counter() - started, 2)}
        if validation is not None:
            logs.update(self.step.validation_logs(validation[0], validation[1], batch_size or 64))
        return logs


class _LineReporter(keras.callbacks.Callback):
    """One line per epoch for a ``progress`` callable."""

    def __init__(self, report: Callable[[str], None], epochs: int) -> None:
        super().__init__()
        self._report, self._epochs = report, epochs

    def on_epoch_end(self, epoch: int, logs: Optional[dict] = None) -> None:
        parts = ", ".join(f"{k} {v:.4f}" for k, v in (logs or {}).items()
                          if isinstance(v, (int, float)) and k != "seconds")
        self._report(f"finetune epoch {epoch + 1}/{self._epochs}: {parts}")


def _check_arguments(epochs: int, learning_rate: float, temperature: float, alpha: float, schedule: str,
                     patience: int) -> None:
    if epochs < 0:
        raise ConfigError(f"epochs must be >= 0; got {epochs}")
    if not learning_rate > 0:
        raise ConfigError(f"learning_rate must be > 0; got {learning_rate}")
    if not temperature > 0:
        raise ConfigError(f"temperature must be > 0; got {temperature}")
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"alpha (the task-loss weight) must be in [0, 1]; got {alpha}")
    if schedule not in ("constant", "cosine"):
        raise ConfigError(f"schedule must be 'constant' or 'cosine', got {schedule!r}")
    if patience < 1:
        raise ConfigError(f"patience must be >= 1; got {patience}")


def _validation(validation_data: Any, model: keras.Model, seed: int, samples: int,
                w_task: float) -> Optional[tuple[Any, Any]]:
    if validation_data is None:
        return None
    source = as_batches(validation_data, model, seed=seed)
    if w_task and not source.has_labels:
        raise DataError("validation_data needs labels when training uses them")
    return source.samples(samples)


def model_signature(model: keras.Model) -> str:
    """A short digest of the model's weights (shapes and types, in order): which model a checkpoint belongs to.

    Names are left out: Keras numbers auto-named layers per process, so the same model
    built in a resumed process may carry other names.
    """
    text = ";".join(f"{tuple(v.shape)}:{v.dtype}" for v in model.weights)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def _stop_agreement(strategy: Any) -> Callable[[Any], Any]:
    """A collective OR (sum > 0) of the workers' stop flags, so no worker waits for a step the others skip."""
    import tensorflow as tf

    @tf.function
    def agree(flag: Any) -> Any:
        per_replica = strategy.run(lambda f: tf.identity(f), args=(flag,))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    return agree

