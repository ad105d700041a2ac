"""The allocation path: cuts where cost is cheapest in damage, never uniformly; the uniform control."""
import pytest

from kerascompress.search.allocation import allocation_path, uniform_path


def _cost(widths):
    # group 1 saves 4 ms per step (32 -> 16 -> 8); group 2 saves 1 ms per step.
    steps = {32: 0, 16: 1, 8: 2}
    return 20.0 - 4.0 * steps[widths.get(1, 32)] - 1.0 * steps[widths.get(2, 32)]


def test_cheapest_damage_per_millisecond_goes_first():
    steps = {1: [32, 16, 8], 2: [32, 16, 8]}
    damage = {(1, 16): 0.1, (1, 8): 2.0, (2, 16): 0.1, (2, 8): 0.2}
    path = allocation_path(_cost, steps, lambda g, w: damage[(g, w)])
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
    def noisy(widths):  # narrowing group 1 measures slower
        return 10.0 + (0.5 if widths.get(1) == 16 else 0.0) - (1.0 if widths.get(2) == 16 else 0.0)

    path = allocation_path(noisy, {1: [32, 16], 2: [32, 16]}, lambda g, w: 1.0)
    assert [p.widths for p in path][1] == {1: 32, 2: 16}


def test_uniform_path_scales_every_group_alike():
    path = uniform_path(_cost, {1: [32, 16, 8], 2: [32, 16, 8]})
    assert all(p.widths[1] == p.widths[2] for p in path)
    assert path[0].widths == {1: 32, 2: 32} and path[-1].widths == {1: 8, 2: 8}
