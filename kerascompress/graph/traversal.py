"""Graph traversal order: the one place that orders nodes and walks nested layers."""
from __future__ import annotations

from collections import defaultdict
from typing import Any

import keras


def node_and_index(ref: Any) -> tuple[str, int]:
    if isinstance(ref, tuple):
        return ref[0], int(ref[1])
    return ref.node, int(getattr(ref, "index", 0))


def topological_order(graph: Any) -> list[str]:
    """Node names so that every node comes after its producers."""
    indeg = {n: len({node_and_index(r)[0] for r in node.inputs}) for n, node in graph.nodes.items()}
    users = defaultdict(set)
    for n, node in graph.nodes.items():
        for r in node.inputs:
            users[node_and_index(r)[0]].add(n)
    ready = [n for n in graph.nodes if indeg[n] == 0]
    order = []
    while ready:
        n = ready.pop(0)
        order.append(n)
        for u in sorted(users[n], key=list(graph.nodes).index):
            indeg[u] -= 1
            if indeg[u] == 0:
                ready.append(u)
    return order


def all_layers(model: keras.Model) -> list[Any]:
    """Every layer, descending into nested models."""
    out = []
    for layer in model.layers:
        out.append(layer)
        if hasattr(layer, "layers") and isinstance(layer, keras.Model):
            out.extend(all_layers(layer))
    return out
