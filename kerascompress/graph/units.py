"""`UnitTable`: channels as units joined into groups (union-find), so coupled channels are cut together."""
from __future__ import annotations

from collections import defaultdict
from typing import Iterable, Optional

import numpy as np


class UnitTable:
    """Union-find over units; each `new` call opens a *space* (one producer's output)."""

    def __init__(self) -> None:
        self.parent: list[int] = []
        self.space: list[int] = []  # space id of each unit
        self.space_parent: list[int] = []
        self.space_owner: list[str] = []
        self.frozen: dict[int, list[str]] = defaultdict(list)  # unit -> reasons (resolved later)
        self._layer_units: dict[str, np.ndarray] = {}

    def new(self, n: int, owner: str, frozen: Optional[str] = None) -> np.ndarray:
        """``n`` fresh units created by node ``owner``."""
        sid = len(self.space_parent)
        self.space_parent.append(sid)
        self.space_owner.append(owner)
        start = len(self.parent)
        units = np.arange(start, start + n, dtype=np.int64)
        self.parent.extend(units.tolist())
        self.space.extend([sid] * n)
        if frozen:
            self.freeze(units[:1], frozen)
        return units

    def new_for_layer(self, layer_name: str, n: int, owner: str) -> np.ndarray:
        """Fresh units once per layer: the nodes of a shared layer produce the same channels."""
        if layer_name not in self._layer_units:
            self._layer_units[layer_name] = self.new(n, owner)
        return self._layer_units[layer_name]

    def find(self, u: int) -> int:
        p = self.parent
        root = u
        while p[root] != root:
            root = p[root]
        while p[u] != root:
            p[u], u = root, p[u]
        return root

    def _find_space(self, s: int) -> int:
        p = self.space_parent
        while p[s] != s:
            p[s] = p[p[s]]
            s = p[s]
        return s

    def union(self, a: Iterable[int], b: Iterable[int]) -> None:
        """Tie ``a[i]`` to ``b[i]`` for every i."""
        for x, y in zip(np.asarray(a).tolist(), np.asarray(b).tolist()):
            rx, ry = self.find(x), self.find(y)
            if rx != ry:
                self.parent[max(rx, ry)] = min(rx, ry)
            sx, sy = self._find_space(self.space[x]), self._find_space(self.space[y])
            if sx != sy:
                self.space_parent[max(sx, sy)] = min(sx, sy)

    def freeze(self, units: Iterable[int], reason: str) -> None:
        for u in np.asarray(units).reshape(-1).tolist():
            self.frozen[u].append(reason)

    def roots(self, m: np.ndarray) -> np.ndarray:
        return np.fromiter((self.find(u) for u in m.tolist()), dtype=np.int64, count=len(m))
