"""Fidelity numbers on hand-made arrays; which outputs are class scores, and how value outputs are judged: relative MSE, per-position classes, NaN."""
from __future__ import annotations

import math

import numpy as np
import pytest

from kerascompress.errors import DataError
from kerascompress.metrics.fidelity import (
    CLASSES,
    VALUES,
    compare_outputs,
    output_kind,
    relative_mse,
)


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

RNG = np.random.default_rng(0)


def test_relative_mse_is_error_energy_over_variance():
    ref = np.array([[1.0], [2.0], [3.0], [4.0]])
    cand = ref + np.array([[0.5], [-0.5], [0.5], [-0.5]])
    # error energy 4 * 0.25 = 1; variance energy about the mean 2.5: 2.25 + 0.25 + 0.25 + 2.25 = 5
    assert relative_mse(ref, cand) == pytest.approx(1 / 5)
    assert relative_mse(ref, ref + 100.0) == pytest.approx(4 * 100.0**2 / 5)  # an offset is an error
    assert relative_mse(ref * 1e6, (ref + 0.1) * 1e6) == pytest.approx(relative_mse(ref, ref + 0.1))  # scale-free
    assert relative_mse(np.ones((3, 2)), np.ones((3, 2))) == 0.0
    assert relative_mse(ref, np.where(ref > 3, np.nan, ref)) == math.inf


@pytest.mark.parametrize("ref,labels,kind", [
    (np.array([[0.2, 0.8], [0.6, 0.4]]), None, CLASSES),  # several units: class scores
    (np.array([[0.3], [0.9]]), None, CLASSES),  # one unit in [0, 1]: a probability
    (np.array([[-3.0], [12.5]]), None, VALUES),  # one unbounded unit: a value
    (np.array([[-3.0], [12.5]]), np.array([0, 1]), CLASSES),  # a logit with 0/1 labels
    (np.array([[-3.0], [12.5]]), np.array([-2.9, 12.0]), VALUES),  # float targets: regression
    (np.array([[-3.0], [12.5]]), np.array([3, 12]), VALUES),  # integer targets beyond 0/1: counts
    (np.array([[0.2, 0.8], [0.6, 0.4]]), np.array([[1.5, -2.0], [0.1, 0.3]]), VALUES),  # multi-target regression
    (np.array([[0.2, 0.8], [0.6, 0.4]]), np.array([[0.0, 1.0], [1.0, 0.0]]), CLASSES),  # one-hot
    (np.array([[0.2, 0.8], [0.6, 0.4]]), np.array([[0.3, 0.7], [0.9, 0.1]]), CLASSES),  # soft labels
])
def test_output_kind(ref, labels, kind):
    assert output_kind(ref, labels) == kind


def test_float_targets_are_never_cast_to_classes():
    """The issue's case: regression targets scored as accuracy after an int cast."""
    ref = RNG.normal(size=(50, 1)) * 10
    cand = ref + RNG.normal(size=(50, 1)) * 0.1
    f = compare_outputs(ref, cand, labels=ref[:, 0] + 0.3)
    assert f.accuracy is None and f.top1_agreement is None
    assert f.relative_mse == pytest.approx(relative_mse(ref, cand))
    assert 1e-5 < f.relative_mse < 1e-3


def test_segmentation_outputs_are_scored_per_pixel():
    ref = RNG.random((4, 6, 6, 3))
    labels = ref.argmax(-1)
    cand = ref.copy()
    cand[0, 0, 0] = [0.0, 0.0, 5.0] if labels[0, 0, 0] != 2 else [5.0, 0.0, 0.0]  # one pixel flips
    f = compare_outputs(ref, cand, labels=labels)
    assert f.top1_agreement == pytest.approx(1 - 1 / (4 * 36))
    assert f.reference_accuracy == 1.0 and f.accuracy == pytest.approx(1 - 1 / (4 * 36))


def test_a_non_finite_candidate_counts_as_wrong_and_infinitely_far():
    ref = np.eye(4)[[0, 1, 2, 3]]
    cand = ref.copy()
    cand[1] = np.nan
    f = compare_outputs(ref, cand, labels=np.array([0, 1, 2, 3]))
    assert f.top1_agreement == 0.75 and f.accuracy == 0.75
    assert f.max_abs_error == math.inf


def test_a_non_finite_reference_is_refused():
    with pytest.raises(DataError, match="original model's outputs are NaN/Inf on 1 of 2 samples"):
        compare_outputs(np.array([[np.nan, 1.0], [0.0, 1.0]]), np.zeros((2, 2)))


def test_mixed_heads_report_classes_and_values_separately():
    cls = np.eye(3)[[0, 1, 2, 0]]
    val = np.array([[1.0], [2.0], [3.0], [4.0]])
    f = compare_outputs([cls, val], [cls, val + 0.5], labels=[np.array([0, 1, 2, 0]), val[:, 0]])
    first, second = f.per_output
    assert first.accuracy == 1.0 and first.relative_mse is None
    assert second.top1_agreement is None and second.relative_mse == pytest.approx(1 / 5)
    assert f.accuracy == 1.0 and f.relative_mse == pytest.approx(1 / 5)


@pytest.mark.parametrize("labels,message", [
    (np.array(["cat", "dog", "cat"]), "labels are strings .*np.unique"),
    (np.array([0, 3, 1]), "class ids from 0 to 3, but the output has 3 units"),
    (np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]), r"shaped \(2,\) per sample do not fit an output shaped \(3,\)"),
    (np.array([0.0, np.nan, 1.0]), "NaN/Inf"),
    (np.array([0, 1]), "2 labels for 3 outputs"),
])
def test_labels_that_cannot_belong_to_the_output_are_named(labels, message):
    ref = np.eye(3)
    with pytest.raises(DataError, match=message):
        compare_outputs(ref, ref, labels=labels)
