"""Training losses: the task loss a model's outputs call for, and distillation."""
from __future__ import annotations

import keras
import numpy as np
import pytest

from kerascompress.training.losses import distillation_loss


def test_distillation_loss_is_zero_for_identical_outputs():
    p = keras.ops.convert_to_tensor(np.array([[0.2, 0.3, 0.5]], "float32"))
    assert abs(float(distillation_loss(p, p, True, 4.0))) < 1e-6
    q = keras.ops.convert_to_tensor(np.array([[0.6, 0.3, 0.1]], "float32"))
    assert float(distillation_loss(q, p, True, 4.0)) > 0
    r = keras.ops.convert_to_tensor(np.array([[1.0], [2.0]], "float32"))
    assert float(distillation_loss(r, r * 0, False, 4.0)) == pytest.approx(2.5)
