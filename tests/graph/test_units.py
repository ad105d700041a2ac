"""UnitTable: channels as units, tied into groups by union-find."""
from __future__ import annotations

import numpy as np

from kerascompress.graph.units import UnitTable


def test_new_units_are_fresh_and_each_call_opens_a_space():
    t = UnitTable()
    a = t.new(3, "conv_a")
    b = t.new(2, "conv_b", frozen="model input")
    assert a.tolist() == [0, 1, 2] and b.tolist() == [3, 4]
    assert t.space == [0, 0, 0, 1, 1] and t.space_owner == ["conv_a", "conv_b"]
    assert dict(t.frozen) == {3: ["model input"]}  # the first unit carries the space's reason


def test_union_ties_units_pairwise_and_merges_their_spaces():
    t = UnitTable()
    a, b, c = t.new(3, "a"), t.new(3, "b"), t.new(3, "c")
    t.union(b, a)
    assert t.roots(b).tolist() == a.tolist()
    assert t.roots(c).tolist() == c.tolist()
    t.union(c[::-1], b)  # c[2]~b[0], c[1]~b[1], c[0]~b[2]
    assert t.roots(c).tolist() == [2, 1, 0]
    assert t._find_space(t.space[int(c[0])]) == t._find_space(t.space[int(a[0])]) == 0


def test_a_shared_layer_gets_its_units_once():
    t = UnitTable()
    first = t.new_for_layer("shared_conv", 4, "shared_conv")
    second = t.new_for_layer("shared_conv", 4, "shared_conv_1")
    assert second is first and len(t.parent) == 4


def test_find_compresses_paths():
    t = UnitTable()
    u = t.new(4, "x")
    t.union(u[1:2], u[2:3])
    t.union(u[2:3], u[3:4])
    t.parent[3] = 2  # a chain 3 -> 2 -> 1
    assert t.find(3) == 1 and t.parent[3] == 1
    assert t.roots(np.array([3, 2, 0])).tolist() == [1, 1, 0]
