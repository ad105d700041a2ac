"""Checkpoints that let an interrupted fine-tuning continue exactly where it stopped.

A checkpoint holds every student variable (weights, BatchNorm statistics, and the RNG
states of Dropout-like layers, which ``tf.train.Checkpoint(model=...)`` would miss since
Keras seed generators are not trackable), the optimizer (slots, iteration count, loss
scale), the position (epoch, batches of it already trained on, global step), the running
sums behind the epoch's logged loss, the held-out monitor's state (best score and
weights), the per-epoch history, and a fingerprint of the settings that decide the
result. Resuming with a different fingerprint is refused: the batches skipped would not
be the ones already trained on, or the run would not be the one that was interrupted.

With several workers every worker takes part in a save (variables may be read with
collectives), but only the chief writes into the directory; the others write a scratch
copy that is deleted at once.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
from typing import Any, Mapping, Optional

from kerascompress.errors import ResumeError
from kerascompress.training.strategies import worker


@dataclasses.dataclass
class Position:
    """Where training stands: ``step`` global batches of ``epoch`` are done; ``global_step`` in total."""

    epoch: int = 0
    step: int = 0
    global_step: int = 0
    loss_sum: float = 0.0
    examples: float = 0.0


def has_checkpoint(directory: Any) -> bool:
    """True when ``directory`` holds a complete checkpoint written by a chief."""
    import tensorflow as tf

    return directory is not None and tf.train.latest_checkpoint(str(directory)) is not None


class Checkpointer:
    """Saves and restores one run's state in ``directory`` (see the module docstring).

    ``state`` names further trackables saved alongside (e.g. the monitor's best weights).
    """

    def __init__(self, directory: Any, strategy: Any, variables: list, optimizer: Any, fingerprint: Mapping,
                 state: Optional[Mapping[str, Any]] = None) -> None:
        import tensorflow as tf

        self.directory = str(directory)
        self.chief, task_id, _ = worker(strategy)
        self._scratch = os.path.join(self.directory, f".worker-{task_id}")
        self._fingerprint = json.dumps(dict(fingerprint), sort_keys=True)
        self._position = {name: tf.Variable(0, dtype=tf.int64, trainable=False)
                          for name in ("epoch", "step", "global_step")}
        self._sums = {name: tf.Variable(0.0, dtype=tf.float64, trainable=False) for name in ("loss_sum", "examples")}
        self._saved_fingerprint = tf.Variable(self._fingerprint, dtype=tf.string, trainable=False)
        self._history = tf.Variable("[]", dtype=tf.string, trainable=False)
        self._checkpoint = tf.train.Checkpoint(
            variables=list(variables), optimizer=optimizer, fingerprint=self._saved_fingerprint,
            history=self._history, **self._position, **self._sums, **dict(state or {}),
        )
        self._manager = (tf.train.CheckpointManager(self._checkpoint, self.directory, max_to_keep=1)
                         if self.chief else None)

    def latest(self) -> Optional[str]:
        """The newest complete checkpoint written by the chief, if any."""
        import tensorflow as tf

        return tf.train.latest_checkpoint(self.directory)

    def restore(self) -> Optional[tuple[Position, list[dict]]]:
        """Load the newest checkpoint into the variables: (position, history so far); None when there is none.

        The fingerprint is compared first, so a different run is named as such rather
        than failing on the first variable whose shape differs.
        """
        import tensorflow as tf

        path = self.latest()
        if path is None:
            return None
        saved = tf.train.load_checkpoint(path).get_tensor("fingerprint/.ATTRIBUTES/VARIABLE_VALUE").decode()
        if saved != self._fingerprint:
            raise ResumeError(f"cannot resume from {path}: it was written with different settings "
                              f"({_differences(saved, self._fingerprint)}); resume with the settings of the "
                              f"interrupted run, or remove {self.directory} to start afresh")
        try:
            self._checkpoint.restore(path).assert_existing_objects_matched()
        except (AssertionError, ValueError) as exc:
            raise ResumeError(f"cannot resume from {path}: it holds a different model or optimizer ({exc}); "
                              f"resume with the model and settings of the interrupted run, or remove "
                              f"{self.directory} to start afresh") from exc
        position = Position(*(int(v.numpy()) for v in self._position.values()),
                            *(float(v.numpy()) for v in self._sums.values()))
        return position, json.loads(self._history.numpy().decode())

    def save(self, position: Position, history: list[dict]) -> None:
        """Write the current state; every worker calls this, only the chief's copy is kept."""
        for name, var in self._position.items():
            var.assign(getattr(position, name))
        for name, var in self._sums.items():
            var.assign(getattr(position, name))
        self._history.assign(json.dumps(history))
        if self._manager is not None:
            self._manager.save(checkpoint_number=position.global_step)
        else:
            self._checkpoint.write(os.path.join(self._scratch, "scratch"))
            shutil.rmtree(self._scratch, ignore_errors=True)


def _differences(saved: str, now: str) -> str:
    """``key: saved -> now`` for each setting that differs."""
    a, b = json.loads(saved), json.loads(now)
    keys = sorted(set(a) | set(b))
    return ", ".join(f"{k}: {a.get(k)!r} then, {b.get(k)!r} now" for k in keys if a.get(k) != b.get(k))


def refuse_overwrite(directory: Any) -> None:
    """A fresh run must not silently replace the checkpoints of an interrupted one."""
    if has_checkpoint(directory):
        raise ResumeError(f"{directory} already holds checkpoints of a fine-tuning run: pass resume=True to continue "
                          f"it, or use an empty checkpoint directory")
