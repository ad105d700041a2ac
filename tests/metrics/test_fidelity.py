"""Fidelity numbers of a candidate's outputs against the reference, on hand-made arrays."""
from __future__ import annotations

import numpy as np
import pytest

from kerascompress.errors import DataError
from kerascompress.metrics.fidelity import compare_outputs


def test_fidelity_on_hand_made_arrays():
    ref = np.array([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.3, 0.3, 0.4], [0.5, 0.4, 0.1]], dtype="f4")
    cand = np.array([[0.8, 0.2, 0.0], [0.2, 0.7, 0.1], [0.3, 0.5, 0.2], [0.5, 0.4, 0.1]], dtype="f4")
    y = np.array([0, 1, 2, 1])
    f = compare_outputs(ref, cand, labels=y)
    assert f.n == 4
    assert f.max_abs_error == pytest.approx(0.2, abs=1e-6)
    assert f.mean_abs_error == pytest.approx((0.1 + 0.1 + 0.2 + 0.2) / 12, abs=1e-6)
    assert f.top1_agreement == 0.75  # sample 2 flips from class 2 to 1
    assert f.reference_accuracy == 0.75  # ref right on 0, 1, 2
    assert f.accuracy == 0.5  # candidate right on 0, 1
    assert f.accuracy_drop == pytest.approx(0.25)
    onehot = np.eye(3)[y]
    assert compare_outputs(ref, cand, labels=onehot).accuracy == 0.5
    no_labels = compare_outputs(ref, cand)
    assert no_labels.accuracy is None and no_labels.reference_accuracy is None


def test_fidelity_binary_and_multi_output_worst_case():
    ref1 = np.array([[0.9], [0.2], [0.6]], dtype="f4")
    cand1 = np.array([[0.8], [0.4], [0.4]], dtype="f4")
    ref2 = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]], dtype="f4")
    cand2 = ref2 + 0.01
    f = compare_outputs([ref1, ref2], [cand1, cand2], labels=[np.array([1, 0, 1]), np.array([0, 1, 0])])
    first, second = f.per_output
    assert first.top1_agreement == pytest.approx(2 / 3) and first.accuracy == pytest.approx(2 / 3)
    assert second.top1_agreement == 1.0 and second.max_abs_error == pytest.approx(0.01, abs=1e-6)
    assert f.top1_agreement == pytest.approx(2 / 3)
    assert f.max_abs_error == pytest.approx(0.2, abs=1e-6)
    assert f.accuracy == pytest.approx(2 / 3) and f.reference_accuracy == 1.0


def test_fidelity_shape_mismatch_is_a_data_error():
    with pytest.raises(DataError, match="shape"):
        compare_outputs(np.zeros((3, 2)), np.zeros((3, 4)))
    with pytest.raises(DataError, match="labels"):
        compare_outputs(np.zeros((3, 2)), np.zeros((3, 2)), labels=np.zeros(4))
