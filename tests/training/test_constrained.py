"""Constrained fine-tuning: centroid gradients are per-cluster sums; masks and centroids stay exact."""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from kerascompress.passes.cluster import cluster_kernel
from kerascompress.training.constrained import (
    ClusterConstraint,
    MaskConstraint,
    constrained_finetune,
)


def _tiny(seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    inp = keras.Input((12,))
    h = layers.Dense(16, activation="relu", name="hidden")(inp)
    h = layers.BatchNormalization(name="bn")(h)
    out = layers.Dense(3, activation="softmax", name="out")(h)
    return keras.Model(inp, out)


def _data(n: int = 256, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 12)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0.5).astype(np.int64)
    return x, y


def test_centroid_gradient_is_the_sum_of_member_gradients() -> None:
    model = _tiny()
    kernel = model.get_layer("hidden").kernel
    clustered, cents, segs, frozen = cluster_kernel(keras.ops.convert_to_numpy(kernel), 4)
    kernel.assign(clustered)
    c = ClusterConstraint(kernel, cents, segs, frozen)
    g = np.random.default_rng(1).standard_normal(tuple(kernel.shape)).astype(np.float32)
    (got,) = c.gradients(tf.constant(g))
    want = np.array([g[segs == i].sum() for i in range(len(cents))], np.float32)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-5)


def test_cluster_and_mask_constraints_hold_exactly_after_training() -> None:
    model = _tiny()
    x, y = _data()
    hidden = model.get_layer("hidden").kernel
    clustered, cents, segs, frozen = cluster_kernel(keras.ops.convert_to_numpy(hidden), 5)
    hidden.assign(clustered)
    out = model.get_layer("out").kernel
    mask = (np.arange(int(np.prod(out.shape))).reshape(tuple(out.shape)) % 2).astype(np.float32)
    out.assign(keras.ops.convert_to_numpy(out) * mask)
    before = keras.ops.convert_to_numpy(hidden).copy()
    result = constrained_finetune(
        model, x, y, [ClusterConstraint(hidden, cents, segs, frozen), MaskConstraint(out, mask)],
        epochs=3, learning_rate=1e-2, batch_size=32,
    )
    after_hidden = keras.ops.convert_to_numpy(hidden)
    after_out = keras.ops.convert_to_numpy(out)
    assert result.steps == 3 * 8
    assert np.unique(after_hidden).size <= 5
    assert not np.array_equal(after_hidden, before)  # the centroids did train
    # members of one cluster share one value, and the partition is unchanged
    for i in range(len(cents)):
        assert np.unique(after_hidden[segs == i]).size <= 1
    assert np.all(after_out[mask == 0] == 0.0)
    assert np.count_nonzero(after_out[mask == 1]) == int(mask.sum())
    assert result.loss_last_epoch < result.loss_first_epoch


def test_frozen_zero_centroid_stays_zero() -> None:
    model = _tiny()
    x, y = _data()
    kernel = model.get_layer("hidden").kernel
    value = keras.ops.convert_to_numpy(kernel)
    value[np.abs(value) < np.quantile(np.abs(value), 0.4)] = 0.0
    clustered, cents, segs, frozen = cluster_kernel(value, 6, preserve_zeros=True)
    assert frozen.sum() == 1 and cents[frozen][0] == 0.0
    kernel.assign(clustered)
    constrained_finetune(model, x, y, [ClusterConstraint(kernel, cents, segs, frozen)], epochs=2, learning_rate=1e-2)
    after = keras.ops.convert_to_numpy(kernel)
    assert np.all(after[value == 0] == 0.0)
    assert np.unique(after).size <= 6


def test_freeze_batchnorm_keeps_statistics_and_restores_trainable() -> None:
    model = _tiny()
    x, y = _data()
    bn = model.get_layer("bn")
    mean = keras.ops.convert_to_numpy(bn.moving_mean).copy()
    constrained_finetune(model, x, y, [], epochs=1, freeze_batchnorm=True)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(bn.moving_mean), mean)
    assert bn.trainable
    constrained_finetune(model, x, y, [], epochs=1, freeze_batchnorm=False)
    assert not np.array_equal(keras.ops.convert_to_numpy(bn.moving_mean), mean)


def test_teacher_distillation_runs() -> None:
    model, teacher = _tiny(0), _tiny(1)
    x, y = _data()
    result = constrained_finetune(model, x, y, [], epochs=1, teacher=teacher, distill_weight=0.5)
    assert np.isfinite(result.loss_last_epoch)
