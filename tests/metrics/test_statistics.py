"""Paired accuracy differences: exact counts, the standard error formula, intervals, noise wording."""
import math

import numpy as np
import pytest

from kerascompress.metrics.statistics import (
    accuracy_standard_error,
    describe_drop,
    paired_difference,
)


def test_paired_difference_counts_and_standard_error():
    # 1000 samples: both right on 900, only the reference on 30, only the candidate on 10, both wrong on 60.
    ref = np.array([1] * 900 + [1] * 30 + [0] * 10 + [0] * 60, bool)
    cand = np.array([1] * 900 + [0] * 30 + [1] * 10 + [0] * 60, bool)
    d = paired_difference(ref, cand)
    assert (d.n, d.only_reference_right, d.only_candidate_right) == (1000, 30, 10)
    assert d.drop == pytest.approx(0.02)
    assert d.standard_error == pytest.approx(math.sqrt((0.04 - 0.02**2) / 1000))
    lo, hi = d.interval
    assert lo == pytest.approx(0.02 - 1.959964 * d.standard_error) and hi == pytest.approx(0.02 + 1.959964 * d.standard_error)


def test_paired_is_tighter_than_unpaired_for_agreeing_models():
    rng = np.random.default_rng(0)
    ref = rng.random(5000) < 0.9
    cand = ref.copy()
    flip = rng.choice(5000, 100, replace=False)  # the models disagree on 2% of samples
    cand[flip] = ~cand[flip]
    d = paired_difference(ref, cand)
    unpaired = math.hypot(accuracy_standard_error(ref.mean(), 5000), accuracy_standard_error(cand.mean(), 5000))
    assert d.standard_error < 0.5 * unpaired


def test_identical_models_have_no_drop_and_no_spread():
    x = np.array([True, False, True])
    d = paired_difference(x, x)
    assert d.drop == 0 and d.standard_error == 0


def test_noise_wording():
    d = paired_difference([1] * 980 + [0] * 20, [1] * 971 + [0] * 29)
    assert d.drop == pytest.approx(0.009)
    text = describe_drop(d, 0.01)
    assert text.startswith("drop +0.90 points (95% interval") and "within noise" in text
    clear = paired_difference([1] * 1000, [1] * 1000)
    assert "within noise" not in describe_drop(clear, 0.01)


def test_mismatched_lengths_are_refused():
    with pytest.raises(ValueError, match="differ in number"):
        paired_difference([True], [True, False])
