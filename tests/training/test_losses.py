"""Training losses: the task loss a model's outputs call for, and distillation."""
from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerascompress.training.losses import (
    distillation_loss,
    distillation_per_example,
    looks_like_probabilities,
    task_loss,
    task_loss_per_example,
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


def _logits(n=6, k=5, seed=0):
    return np.random.default_rng(seed).normal(size=(n, k)).astype(np.float32)


def test_per_example_losses_match_keras_and_average_to_the_batch_losses():
    z, y = _logits(), np.array([0, 1, 2, 3, 4, 0])
    per = task_loss_per_example(y, tf.constant(z), probabilities=False)
    assert per.shape == (6,)
    ref = keras.losses.sparse_categorical_crossentropy(y, z, from_logits=True)
    np.testing.assert_allclose(per.numpy(), np.asarray(ref), rtol=1e-5)
    assert float(task_loss(y, tf.constant(z), False)) == pytest.approx(float(np.mean(ref)), rel=1e-5)
    out, target = _logits(k=3), _logits(k=3, seed=1)
    np.testing.assert_allclose(task_loss_per_example(target, tf.constant(out), False).numpy(),
                               ((out - target) ** 2).mean(-1), rtol=1e-6)


def test_distillation_from_probabilities_equals_from_logits():
    z, t = _logits(), _logits(seed=3)
    from_logits = distillation_per_example(tf.constant(z), tf.constant(t), False, 2.0).numpy()
    from_probs = distillation_per_example(tf.nn.softmax(z), tf.nn.softmax(t), True, 2.0).numpy()
    np.testing.assert_allclose(from_probs, from_logits, rtol=1e-4, atol=1e-6)
    assert (from_logits > 0).all()


def test_half_precision_outputs_are_computed_in_float32():
    per = task_loss_per_example(np.arange(6) % 5, tf.constant(_logits(), tf.bfloat16), False)
    assert per.dtype == tf.float32
