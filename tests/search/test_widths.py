"""Widths: rounding to the target's multiple, the steps a group may take, and nested channel choices."""
import numpy as np

from kerascompress.search.widths import (
    as_key,
    keep_for,
    round_width,
    sample_widths,
    width_steps,
)


def test_round_width_rounds_up_to_the_multiple_within_bounds():
    assert round_width(64, 20.0, 16, 8) == 32
    assert round_width(64, 3.0, 16, 8) == 16
    assert round_width(24, 23.0, 16, 8) == 24  # never more than the group has
    assert round_width(64, 20.0, 1, 8) == 20


def test_width_steps_are_multiples_down_to_the_floor():
    assert width_steps(64, 16, 8, 0.875) == [64, 48, 32, 16]
    assert width_steps(40, 16, 8, 0.5) == [40, 32]  # floor: 20 rounded up to 32
    assert width_steps(16, 16, 8, 0.9) == [16]  # nothing narrower is a multiple of 16


def test_narrower_widths_keep_a_subset_of_the_wider_ones():
    scores = {0: np.array([5.0, 1.0, 4.0, 2.0, 3.0, 0.5])}
    wide, narrow = keep_for(scores, {0: 4})[0], keep_for(scores, {0: 2})[0]
    np.testing.assert_array_equal(wide, [0, 2, 3, 4])
    np.testing.assert_array_equal(narrow, [0, 2])
    assert keep_for(scores, {0: 6}) == {}  # a full width changes nothing
    assert as_key({3: 8, 1: 16}) == ((1, 16), (3, 8))


def test_sample_widths_keeps_both_ends():
    assert sample_widths([64, 48, 32, 16], 6) == [64, 48, 32, 16]
    picked = sample_widths(list(range(100, 0, -4)), 4)
    assert picked[0] == 100 and picked[-1] == 4 and len(picked) == 4
