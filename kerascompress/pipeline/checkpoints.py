"""Checkpoints of one `optimize` run, so a run killed during a long fine-tuning can continue.

They live in ``output_dir/checkpoints/``: one folder per step of the recipe
(``02-ChannelPruning/``), in which each fine-tuning of that step keeps its own
(`PassContext.fine_tuning`). ``run.json`` records what the run was (recipe, seed,
target, constraints). ``optimize(..., resume=True)`` runs the recipe again: passes make
the same decisions, and each fine-tuning continues from its checkpoint (or returns at
once when it had finished). When the run completes the folder is removed: checkpoints
exist to survive a crash, not to be kept.

What is refused, with the fix in the message: resuming without ``output_dir`` or with
nothing to resume; resuming a run that was something else; a fresh run over the
checkpoints of an interrupted one (it would silently discard them).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Mapping, Optional

from kerascompress.errors import ResumeError
from kerascompress.fileio import write_text_atomic

FOLDER = "checkpoints"
RUN_FILE = "run.json"


class RunCheckpoints:
    """Where one run's fine-tunings checkpoint (None without ``output_dir``), and the checks around resuming."""

    def __init__(self, output_dir: Optional[Any], resume: bool, run: Mapping[str, Any]) -> None:
        self.resume = bool(resume)
        self.root = Path(output_dir) / FOLDER if output_dir is not None else None
        if self.root is None:
            if self.resume:
                raise ResumeError("resume=True needs output_dir: the folder the interrupted run was writing to")
            return
        described = json.loads(json.dumps(dict(run), default=repr))
        saved = self.root / RUN_FILE
        if self.resume:
            if not saved.exists():
                raise ResumeError(f"resume=True but {self.root} holds no checkpoints to resume: run without resume "
                                  f"(the interrupted run may have finished, or never reached a fine-tuning)")
            before = json.loads(saved.read_text())
            if before != described:
                raise ResumeError(f"cannot resume the run in {self.root}: it was started with other settings "
                                  f"({_differences(before, described)}); resume with the same recipe, seed, target "
                                  f"and constraints, or delete {self.root} to start afresh")
        elif saved.exists():
            raise ResumeError(f"{self.root} holds the checkpoints of an interrupted run: pass resume=True to continue "
                              f"it, or delete that folder to start afresh")
        self.root.mkdir(parents=True, exist_ok=True)
        write_text_atomic(saved, json.dumps(described, indent=1, sort_keys=True))

    def step_dir(self, index: int, name: str) -> Optional[Path]:
        """The folder of the recipe's step ``index`` (None when the run keeps no checkpoints)."""
        return None if self.root is None else self.root / f"{index:02d}-{name}"

    def finish(self) -> None:
        """The run completed: its checkpoints are no longer needed."""
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)


def _differences(before: Mapping[str, Any], now: Mapping[str, Any]) -> str:
    keys = sorted(set(before) | set(now))
    return "; ".join(f"{k}: {before.get(k)!r} then, {now.get(k)!r} now" for k in keys if before.get(k) != now.get(k))
