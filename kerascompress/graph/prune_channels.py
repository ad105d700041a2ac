"""Apply a channel selection to a graph: slice the weights and configs of every layer.

The selection says, per `ChannelGroup`, which of its channels stay. Each node then gets
a keep-mask for each input and output tensor (from the channel maps), and its layer
rule cuts its weights and config. The result is a smaller graph computing the same
function as the original whose consumers ignore the removed channels.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import numpy as np

from kerascompress.graph.channel_groups import ChannelGroups
from kerascompress.graph.traversal import node_and_index


def removed_units(groups: ChannelGroups, keep: Mapping[int, Sequence[int]]) -> np.ndarray:
    """Root unit ids removed by ``keep`` (group id -> indices of channels kept)."""
    out = []
    for gid, kept in keep.items():
        g = groups.groups[gid]
        kept = np.asarray(kept, dtype=np.int64)
        if len(kept) == g.size:
            continue
        if not g.prunable:
            raise ValueError(f"channel group {gid} is frozen ({'; '.join(g.frozen)}); it cannot be pruned")
        if len(kept) == 0:
            raise ValueError(f"channel group {gid} would lose all its channels; keep at least one")
        mask = np.ones(g.size, bool)
        mask[kept] = False
        out.append(g.units[mask])
    return np.concatenate(out) if out else np.zeros(0, np.int64)


def keep_mask(m: Optional[np.ndarray], removed: np.ndarray) -> Optional[np.ndarray]:
    """Boolean mask of the channels of map ``m`` that stay; None when all stay."""
    if m is None or len(removed) == 0:
        return None
    mask = ~np.isin(m, removed)
    return None if mask.all() else mask


def node_masks(groups: ChannelGroups, node: Any, removed: np.ndarray) -> tuple[list, list]:
    """Keep-masks of a node's input and output tensors."""
    ins = [keep_mask(groups.maps.get(node_and_index(r)), removed) for r in node.inputs]
    n_out = max(1, len(node.output_shapes or []))
    outs = [keep_mask(groups.maps.get((node.name, i)), removed) for i in range(n_out)]
    return ins, outs


def prune_channels(graph: Any, groups: ChannelGroups, keep: Mapping[int, Sequence[int]]) -> Any:
    """A pruned copy of ``graph`` keeping, per group id in ``keep``, the listed channels.

    Groups absent from ``keep`` stay whole. ``graph`` itself is not modified.
    """
    removed = removed_units(groups, keep)
    out = graph.copy()
    if len(removed) == 0:
        return out
    done: dict[str, Any] = {}
    for name in groups.order:
        node = out.nodes[name]
        ins, outs = node_masks(groups, node, removed)
        if all(m is None for m in ins + outs):
            continue
        first = done.get(node.layer_name)
        if first is not None:  # a shared layer: its weights are already cut
            node.config.update(first.config)
            if node.weights is not first.weights:
                node.weights[:] = list(first.weights)
            continue
        groups.rules[name].prune(node, ins, outs)
        done[node.layer_name] = node
    return out


def cost_fractions(groups: ChannelGroups, graph: Any, removed: np.ndarray) -> dict[str, float]:
    """Per node, the fraction of its MACs/params left after removing ``removed`` units.

    A consumer's cost scales with kept inputs times kept outputs; a channel-wise layer's
    with kept outputs. Used to search for a MAC or parameter target quickly.
    """
    frac = {}
    for name in groups.order:
        node = graph.nodes[name]
        fin = fout = 1.0
        if len(removed):
            m_out = groups.maps.get((name, 0))
            if m_out is not None and len(m_out):
                fout = 1.0 - np.isin(m_out, removed).mean()
            if getattr(groups.rules[name], "mixes_channels", False) and node.inputs:
                m_in = groups.maps.get(node_and_index(node.inputs[0]))
                if m_in is not None and len(m_in):
                    fin = 1.0 - np.isin(m_in, removed).mean()
        frac[name] = float(fin * fout)
    return frac
