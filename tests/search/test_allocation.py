"""The allocation path: cuts where cost is cheapest in damage, never uniformly; the uniform control."""
import pytest

from kerascompress.search.allocation import allocation_path, uniform_path
from kerascompress.search.cost_table import CostTable


def _table():
    # group 1 saves 4 ms per step; group 2 saves 1 ms per step.
    return CostTable("s", "ms", 20.0, {1: ([32, 16, 8], [20.0, 16.0, 12.0]), 2: ([32, 16, 8], [20.0, 19.0, 18.0])},
                     "test")


def test_cheapest_damage_per_millisecond_goes_first():
    steps = {1: [32, 16, 8], 2: [32, 16, 8]}
    damage = {(1, 16): 0.1, (1, 8): 2.0, (2, 16): 0.1, (2, 8): 0.2}
    path = allocation_path(_table(), steps, lambda g, w: damage[(g, w)])
    assert [p.widths for p in path] == [
        {1: 32, 2: 32},
        {1: 16, 2: 32},  # 4 ms for 0.1: best
        {1: 16, 2: 16},  # 1 ms for 0.1 beats 4 ms for 1.9
        {1: 16, 2: 8},   # 1 ms for 0.1 again
        {1: 8, 2: 8},
    ]
    assert [p.cost for p in path] == pytest.approx([20.0, 16.0, 15.0, 14.0, 10.0])
    assert path[-1].damage == pytest.approx(2.2)


def test_cuts_that_save_nothing_come_last():
    table = CostTable("s", "ms", 10.0, {1: ([32, 16], [10.0, 10.5]), 2: ([32, 16], [10.0, 9.0])}, "noisy")
    path = allocation_path(table, {1: [32, 16], 2: [32, 16]}, lambda g, w: 1.0)
    assert [p.widths for p in path][1] == {1: 32, 2: 16}


def test_uniform_path_scales_every_group_alike():
    path = uniform_path(_table(), {1: [32, 16, 8], 2: [32, 16, 8]})
    assert all(p.widths[1] == p.widths[2] for p in path)
    assert path[0].widths == {1: 32, 2: 32} and path[-1].widths == {1: 8, 2: 8}
