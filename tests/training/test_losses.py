"""Training losses: the task loss a model's outputs call for, and distillation."""
from __future__ import annotations

import keras
import numpy as np
import pytest

from kerascompress.training.losses import (
    distillation_loss,
    looks_like_probabilities,
    task_loss,
)


def test_distillation_loss_is_zero_for_identical_outputs():
    p = keras.ops.convert_to_tensor(np.array([[0.2, 0.3, 0.5]], "float32"))
    assert abs(float(distillation_loss(p, p, True, 4.0))) < 1e-6
    q = keras.ops.convert_to_tensor(np.array([[0.6, 0.3, 0.1]], "float32"))
    assert float(distillation_loss(q, p, True, 4.0)) > 0
    r = keras.ops.convert_to_tensor(np.array([[1.0], [2.0]], "float32"))
    assert float(distillation_loss(r, r * 0, False, 4.0)) == pytest.approx(2.5)


def test_probabilities_are_told_from_logits():
    assert looks_like_probabilities(np.array([[0.2, 0.8], [0.5, 0.5]]))
    assert not looks_like_probabilities(np.array([[2.0, -1.0]]))  # logits
    assert not looks_like_probabilities(np.array([[1.0], [1.0]]))  # one output: a regression or a sigmoid
    assert not looks_like_probabilities(np.array([0.2, 0.8]))  # no batch axis


def test_task_loss_picks_cross_entropy_for_classes_and_mse_otherwise():
    p = np.array([[0.25, 0.75], [0.5, 0.5]], "float32")
    expected = -(np.log(0.75) + np.log(0.5)) / 2
    sparse = float(task_loss(np.array([1, 0]), keras.ops.convert_to_tensor(p), True))
    onehot = float(task_loss(np.array([[0, 1], [1, 0]]), keras.ops.convert_to_tensor(p), True))
    assert sparse == pytest.approx(expected, rel=1e-5) and onehot == pytest.approx(expected, rel=1e-5)
    logits = np.log(p)
    assert float(task_loss(np.array([1, 0]), keras.ops.convert_to_tensor(logits), False)) == pytest.approx(
        expected, rel=1e-5)
    reg = float(task_loss(np.array([[1.0], [3.0]], "float32"), keras.ops.convert_to_tensor(np.zeros((2, 1), "float32")),
                          False))
    assert reg == pytest.approx(5.0)
