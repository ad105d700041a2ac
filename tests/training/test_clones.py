"""The student: a copy under the strategy, computing in the mixed policy, BN synchronised when asked."""
import random

import keras
import numpy as np

from kerascompress.training import clones
from tests.helpers.training import small_cnn


def test_the_student_computes_in_the_policy_but_keeps_outputs_and_variables_float32():
    student = clones.student(small_cnn(), "mixed_bfloat16", sync_batchnorm=False, freeze_batchnorm=False)
    policies = {layer.name: layer.dtype_policy.name for layer in student.layers}
    assert policies["conv"] == "mixed_bfloat16" and policies["bn"] == "mixed_bfloat16"
    assert policies["logits"] == "float32"  # the output layer
    assert student.get_layer("conv").kernel.dtype == "float32"
    assert student(np.zeros((1, 8, 8, 1), np.float32)).dtype == "float32"


def test_sync_and_frozen_batchnorm_are_set_on_the_student_only():
    model = small_cnn()
    student = clones.student(model, None, sync_batchnorm=True, freeze_batchnorm=True)
    assert student.get_layer("bn").synchronized and not student.get_layer("bn").trainable
    assert not model.get_layer("bn").synchronized and model.get_layer("bn").trainable
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), student.get_weights()))
    back = clones.plain_copy(student, model)
    assert not back.get_layer("bn").synchronized and back.get_layer("bn").trainable


def test_reseeding_fixes_dropout_masks():
    def mask(python_seed, seed=None):
        model = small_cnn(dropout=0.5)
        random.seed(python_seed)  # a copy's seed generators draw from Python's global random
        student = clones.student(model, None, False, False)
        if seed is not None:
            clones.reseed(student, seed)
        return keras.ops.convert_to_numpy(student.get_layer("dropout")(np.ones((4, 512), np.float32), training=True))

    assert not np.array_equal(mask(1), mask(2))  # what a fresh and a resumed process would otherwise draw
    assert np.array_equal(mask(1, seed=3), mask(2, seed=3))
    assert not np.array_equal(mask(1, seed=3), mask(1, seed=4))
