"""Taking samples from one array, a list of arrays (several inputs) or a dict of arrays (named inputs)."""
from __future__ import annotations

import numpy as np
import pytest

from kerascompress.data.samples import (
    as_list,
    index_samples,
    n_samples,
    slice_samples,
    take,
)

A = np.arange(10).reshape(5, 2)
B = np.arange(5) * 10


@pytest.mark.parametrize("x", [A, [A, B], (A, B), {"a": A, "b": B}])
def test_the_three_shapes_are_counted_and_cut_alike(x):
    assert n_samples(x) == 5
    first = take(x, 2)
    middle = slice_samples(x, 1, 4)
    picked = index_samples(x, np.array([4, 0]))
    arrays = lambda v: as_list(v)  # noqa: E731
    assert [a.tolist() for a in arrays(first)][0] == [[0, 1], [2, 3]]
    assert [a.tolist() for a in arrays(middle)][0] == [[2, 3], [4, 5], [6, 7]]
    assert [a.tolist() for a in arrays(picked)][0] == [[8, 9], [0, 1]]
    if not isinstance(x, np.ndarray):  # every input of a sample stays with it
        assert arrays(first)[1].tolist() == [0, 10]
        assert arrays(middle)[1].tolist() == [10, 20, 30]
        assert arrays(picked)[1].tolist() == [40, 0]
    assert type(first) is (dict if isinstance(x, dict) else list if isinstance(x, (list, tuple)) else np.ndarray)


def test_empty_and_missing_data():
    assert n_samples(None) == 0 and n_samples([]) == 0 and n_samples({}) == 0
    assert index_samples(None, np.array([0])) is None
    assert take(A, 100).shape == (5, 2)  # asking for more than there is gives everything


def test_as_list_of_dict_list_and_single_array():
    assert as_list({"x": 1, "y": 2}) == [1, 2]
    assert as_list((1, 2)) == [1, 2]
    single = as_list(A)
    assert len(single) == 1 and single[0] is A
