"""`finetune`: trains a copy, learns from labels or a teacher, never touches the caller's model."""
from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import layers as L

from kerascompress.data.bundle import make_bundle
from kerascompress.errors import DataError
from kerascompress.training.finetune import finetune


def _data(n=256, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 8)).astype("float32")
    y = (x[:, 0] + x[:, 1] > 0).astype("int64") + (x[:, 2] > 1).astype("int64")
    return x, y


def _model(width=16, seed=0):
    keras.utils.set_random_seed(seed)
    x = keras.Input((8,))
    h = L.Dense(width, activation="relu")(x)
    return keras.Model(x, L.Dense(3, activation="softmax")(h))


def _accuracy(model, x, y):
    return float((np.argmax(model.predict(x, verbose=0), -1) == y).mean())


def test_labels_only_improves_and_leaves_caller_untouched():
    x, y = _data()
    model = _model()
    before = [w.copy() for w in model.get_weights()]
    lines = []
    tuned = finetune(model, (x, y), epochs=3, learning_rate=1e-2, progress=lines.append)
    assert tuned is not model
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    assert len(lines) == 3 and "epoch 3/3" in lines[-1]
    assert _accuracy(tuned, x, y) > _accuracy(model, x, y)


def test_distillation_without_labels_moves_student_towards_teacher():
    x, y = _data()
    teacher = finetune(_model(seed=1), (x, y), epochs=5, learning_rate=1e-2, progress=False)
    student = _model(width=8, seed=2)

    def gap(m):
        return float(np.abs(m.predict(x, verbose=0) - teacher.predict(x, verbose=0)).mean())

    tuned = finetune(student, x, epochs=3, teacher=teacher, learning_rate=1e-2, progress=False)
    assert gap(tuned) < gap(student)
    both = finetune(student, make_bundle((x, y)), epochs=1, teacher=teacher, learning_rate=1e-2, progress=False)
    assert both.count_params() == student.count_params()


def test_needs_labels_or_teacher():
    x, _ = _data(32)
    with pytest.raises(DataError, match="teacher"):
        finetune(_model(), x, epochs=1, progress=False)
