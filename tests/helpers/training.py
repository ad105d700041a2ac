"""Shared by the fine-tuning tests and their subprocess scripts: data, models, ports, fresh processes."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "tests" / "training" / "scripts"


def digits(n_train: int = 1000) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """sklearn digits as 8x8x1 float32 images in [0, 1]: (x_train, y_train, x_val, y_val)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[..., None]
    y = d.target.astype(np.int64)
    return x[:n_train], y[:n_train], x[1400:], y[1400:]


def small_cnn(seed: int = 1, batchnorm: bool = True, dropout: float = 0.0, softmax: bool = False) -> Any:
    """A tiny digits CNN (conv, BN, dense) with deterministic initial weights."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    inp = keras.Input((8, 8, 1), name="image")
    h = layers.Conv2D(8, 3, padding="same", activation="relu", name="conv")(inp)
    if batchnorm:
        h = layers.BatchNormalization(name="bn")(h)
    h = layers.Flatten(name="flatten")(h)
    if dropout:
        h = layers.Dropout(dropout, name="dropout")(h)
    out = layers.Dense(10, activation="softmax" if softmax else None, name="logits")(h)
    return keras.Model(inp, out)


def teacher_of(model: Any, scale: float = 1.1) -> Any:
    """A teacher that differs from the student (scaled weights), so distillation has work to do."""
    import keras

    teacher = keras.models.clone_model(model)
    teacher.set_weights([w * scale for w in model.get_weights()])
    return teacher


def max_abs_diff(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> float:
    assert len(a) == len(b)
    return max(float(np.max(np.abs(np.asarray(u, np.float64) - np.asarray(v, np.float64)))) for u, v in zip(a, b))


def free_ports(n: int) -> list[int]:
    """Ports the OS reports free right now (held open together, so they are distinct)."""
    sockets = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("localhost", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def child_env(extra: Optional[dict] = None) -> dict:
    """The environment of a script run: this worktree's kerascompress first, quiet TensorFlow, no TF_CONFIG."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    env.pop("TF_CONFIG", None)
    env.update(extra or {})
    return env


def run_script(name: str, args: Sequence[Any] = (), env: Optional[dict] = None, timeout: float = 600,
               check: bool = True) -> subprocess.CompletedProcess:
    """Run tests/training/scripts/<name> in a fresh interpreter (its own TensorFlow device set-up)."""
    proc = subprocess.run([sys.executable, str(SCRIPTS / name), *map(str, args)], env=child_env(env),
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{name} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def last_json(stdout: str) -> dict:
    """The last line of a script's stdout that is a JSON object (its result)."""
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise AssertionError(f"no JSON result in output:\n{stdout[-2000:]}")
