"""Channel dependency groups: which channels of which layers must be removed together.

Every channel a producer (Conv, Dense...) creates is a *unit*. Units flow through the
graph by the layer rules (`layer_rules`): channel-wise layers pass them on, element-wise
merges tie units of their inputs together (union-find), Concatenate stacks them,
Flatten repeats them per spatial position. A `ChannelGroup` is a set of producers whose
units are tied; its channels are the tied unit classes, so a group is scored and cut
as a whole. Units reaching a model output, a model input, or a layer we do not
understand freeze their whole group: we never guess.
"""
from __future__ import annotations

import dataclasses
from collections import defaultdict
from typing import Any

import numpy as np

from kerascompress.graph.layer_rules import ChannelMap, Freeze, rule_for
from kerascompress.graph.traversal import node_and_index, topological_order
from kerascompress.graph.units import UnitTable


@dataclasses.dataclass
class ChannelGroup:
    """Channels that are removed together, across every layer they flow through.

    ``units`` holds one root unit id per prunable channel (the order used by importance
    scores and selections); ``producers`` are the nodes creating them (where their weights
    are scored); ``consumers`` the nodes reading them through weights; ``frozen`` the
    reasons the group may not be pruned (empty when it may).
    """

    id: int
    units: np.ndarray
    producers: list[str]
    consumers: list[str] = dataclasses.field(default_factory=list)
    members: list[str] = dataclasses.field(default_factory=list)
    frozen: list[str] = dataclasses.field(default_factory=list)

    @property
    def size(self) -> int:
        return int(len(self.units))

    @property
    def prunable(self) -> bool:
        return not self.frozen

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "producers": list(self.producers),
            "channels": self.size,
            "frozen": list(self.frozen),
        }


@dataclasses.dataclass
class ChannelGroups:
    """The result of `find_channel_groups`: groups plus each tensor's channel map."""

    groups: list[ChannelGroup]
    maps: dict[tuple[str, int], ChannelMap]  # (node, output index) -> root unit per channel
    order: list[str]  # nodes in topological order
    rules: dict[str, Any]  # node -> LayerRule used
    frozen_nodes: dict[str, str]  # node -> reason it froze its groups
    unit_group: dict[int, int]  # root unit -> group id
    unit_index: dict[int, int]  # root unit -> index within its group

    @property
    def prunable(self) -> list[ChannelGroup]:
        return [g for g in self.groups if g.prunable]

    @property
    def frozen(self) -> list[ChannelGroup]:
        return [g for g in self.groups if not g.prunable]

    def group_indices(self, m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Group id and index in group of each channel of a channel map."""
        gid = np.fromiter((self.unit_group[u] for u in m.tolist()), np.int64, len(m))
        idx = np.fromiter((self.unit_index[u] for u in m.tolist()), np.int64, len(m))
        return gid, idx


def _out_count(node: Any) -> int:
    return max(1, len(node.output_shapes or []))


def find_channel_groups(graph: Any) -> ChannelGroups:
    """Trace channels through ``graph`` (a `ModelGraph`) and return its dependency groups."""
    table = UnitTable()
    maps: dict[tuple[str, int], ChannelMap] = {}
    order = topological_order(graph)
    rules: dict[str, Any] = {}
    frozen_nodes: dict[str, str] = {}
    layer_io: dict[str, tuple[list, list]] = {}  # shared-layer name -> (in maps, out maps) of its first node

    for name in order:
        node = graph.nodes[name]
        rule = rule_for(node)
        rules[name] = rule
        in_maps = [maps.get(node_and_index(r)) for r in node.inputs]
        try:
            out_maps = list(rule.propagate(node, in_maps, table))
            if len(out_maps) < _out_count(node):
                out_maps += [out_maps[-1]] * (_out_count(node) - len(out_maps))
        except Exception as exc:  # noqa: BLE001 - a rule that cannot follow a node freezes, never crashes
            detail = str(exc) if isinstance(exc, Freeze) else f"its channel rule failed ({type(exc).__name__}: {exc})"
            reason = f"{node.layer_name} ({node.class_name}): {detail}"
            frozen_nodes[name] = reason
            for m in in_maps:
                if m is not None:
                    table.freeze(m, reason)
            out_maps = []
            for i in range(_out_count(node)):
                shape = tuple(node.output_shapes[i] or ()) if node.output_shapes else ()
                width = shape[-1] if len(shape) >= 2 and shape[-1] is not None else None
                out_maps.append(None if width is None else table.new(width, name, frozen=reason))
        # A shared layer's weights serve all its nodes: their channels must match.
        if not rule.channel_agnostic and name not in frozen_nodes:
            first = layer_io.setdefault(node.layer_name, (in_maps, out_maps))
            if first[0] is not in_maps:
                for a, b in zip(first[0] + first[1], in_maps + out_maps):
                    if a is not None and b is not None and len(a) == len(b):
                        table.union(a, b)
        for i, m in enumerate(out_maps):
            maps[(name, i)] = m

    for ref in graph.outputs:
        m = maps.get(node_and_index(ref))
        if m is not None:
            table.freeze(m, f"reaches model output {node_and_index(ref)[0]}")

    return _collect(graph, table, maps, order, rules, frozen_nodes)


def _collect(graph, table, maps, order, rules, frozen_nodes) -> ChannelGroups:
    # Resolve every map to root units, and gather each space class's units in creation order.
    for key, m in maps.items():
        if m is not None:
            maps[key] = table.roots(m)
    by_space: dict[int, list[int]] = defaultdict(list)
    seen: set[int] = set()
    for u in range(len(table.parent)):
        r = table.find(u)
        if r not in seen:
            seen.add(r)
            by_space[table._find_space(table.space[r])].append(r)
    reasons: dict[int, list[str]] = defaultdict(list)
    for u, rs in table.frozen.items():
        s = table._find_space(table.space[table.find(u)])
        for r in rs:
            if r not in reasons[s]:
                reasons[s].append(r)
    producers: dict[int, list[str]] = defaultdict(list)
    for sid, owner in enumerate(table.space_owner):
        s = table._find_space(sid)
        if owner not in producers[s]:
            producers[s].append(owner)

    groups, unit_group, unit_index, gid_of_space = [], {}, {}, {}
    for s, units in by_space.items():
        g = ChannelGroup(len(groups), np.asarray(units, np.int64), producers[s], frozen=reasons.get(s, []))
        gid_of_space[s] = g.id
        for i, u in enumerate(units):
            unit_group[u], unit_index[u] = g.id, i
        groups.append(g)

    for name in order:
        node = graph.nodes[name]
        touched_in = {unit_group[u] for r in node.inputs if maps.get(node_and_index(r)) is not None for u in np.unique(maps[node_and_index(r)])}
        touched_out = {unit_group[u] for i in range(_out_count(node)) if maps.get((name, i)) is not None
                       for u in np.unique(maps[(name, i)])}
        for gid in touched_in | touched_out:
            groups[gid].members.append(name)
        if getattr(rules[name], "mixes_channels", False):
            for gid in touched_in:
                groups[gid].consumers.append(name)
    return ChannelGroups(groups, maps, order, rules, frozen_nodes, unit_group, unit_index)
