"""Per-group widths: which channels a width keeps, and the pruned model for a set of widths.

A configuration maps a prunable group id to the number of its channels kept; groups
not named stay whole. Channels are kept by importance score, highest first, so a
narrower width of a group is always a subset of a wider one.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import keras
import numpy as np

from kerascompress.graph.channel_groups import ChannelGroups, find_channel_groups
from kerascompress.graph.model_graph import ModelGraph
from kerascompress.graph.prune_channels import prune_channels

Widths = dict[int, int]


def round_width(size: int, wanted: float, multiple: int, min_channels: int) -> int:
    """Channels to keep: ``wanted`` rounded up to ``multiple``, at least ``min_channels``, at most ``size``."""
    multiple = max(1, int(multiple))
    k = max(wanted, min_channels, 1)
    k = int(math.ceil(k / multiple - 1e-9)) * multiple
    return int(min(k, size))


def width_steps(size: int, multiple: int, min_channels: int, max_ratio: float) -> list[int]:
    """The widths a group may take, widest first: ``size``, then multiples of ``multiple`` down to the floor."""
    floor = round_width(size, size * (1.0 - max_ratio), multiple, min_channels)
    steps = [size]
    w = (size - 1) // max(1, multiple) * max(1, multiple)
    while w >= floor and w > 0:
        if w < size:
            steps.append(w)
        w -= max(1, multiple)
    return steps


def sample_widths(steps: Sequence[int], max_points: int) -> list[int]:
    """At most ``max_points`` of ``steps`` (widest first), always keeping the first and the last."""
    if len(steps) <= max_points:
        return list(steps)
    idx = np.unique(np.round(np.linspace(0, len(steps) - 1, max_points)).astype(int))
    return [steps[i] for i in idx]


def keep_for(scores: Mapping[int, np.ndarray], widths: Mapping[int, int]) -> dict[int, np.ndarray]:
    """Group id -> sorted indices of the ``widths[g]`` highest-scoring channels (only groups that shrink)."""
    keep = {}
    for gid, w in widths.items():
        s = np.asarray(scores[gid])
        if w < len(s):
            keep[gid] = np.sort(np.argsort(-s, kind="stable")[: int(w)])
    return keep


def pruned_model(graph: ModelGraph, groups: ChannelGroups, scores: Mapping[int, np.ndarray],
                 widths: Mapping[int, int], name: str) -> keras.Model:
    """The model with every group cut to its width (the highest-scoring channels kept)."""
    return prune_channels(graph, groups, keep_for(scores, widths)).to_keras(name=name)


def narrow(model: keras.Model, groups: ChannelGroups, scores: Mapping[int, np.ndarray],
           current: Mapping[int, int], target: Mapping[int, int], name: str) -> keras.Model:
    """Cut an already pruned (and trained) ``model`` from widths ``current`` down to ``target``.

    ``groups`` and ``scores`` are the original model's; a narrower width keeps a subset
    of a wider one's channels, so the channels to keep are found by position within
    the ones ``model`` still has. The trained weights of the kept channels carry over.
    """
    graph = ModelGraph.from_keras(model)
    now = find_channel_groups(graph)
    by_producers = {frozenset(g.producers): g for g in now.groups}
    keep: dict[int, np.ndarray] = {}
    for g in groups.prunable:
        cur, new = int(current.get(g.id, g.size)), int(target.get(g.id, g.size))
        if new >= cur:
            continue
        match = by_producers.get(frozenset(g.producers))
        if match is None or match.size != cur:
            raise ValueError(f"channel group of {g.producers} has no {cur}-channel counterpart in the pruned model")
        s = np.asarray(scores[g.id])
        kept_now = np.sort(np.argsort(-s, kind="stable")[:cur])
        kept_next = np.sort(np.argsort(-s, kind="stable")[:new])
        keep[match.id] = np.searchsorted(kept_now, kept_next)
    return prune_channels(graph, now, keep).to_keras(name=name)


def full_widths(groups: ChannelGroups) -> Widths:
    """Every prunable group at its full width."""
    return {g.id: g.size for g in groups.prunable}


def describe_widths(groups: ChannelGroups, widths: Mapping[int, int]) -> dict[str, int]:
    """Widths keyed by the group's first producer layer, for reports."""
    out = {}
    for g in groups.prunable:
        label = g.producers[0] if g.producers else f"group{g.id}"
        out[label] = int(widths.get(g.id, g.size))
    return out


def as_key(widths: Mapping[int, int]) -> tuple[tuple[int, int], ...]:
    """A hashable form of a configuration."""
    return tuple(sorted((int(k), int(v)) for k, v in widths.items()))


__all__ = ["Widths", "as_key", "describe_widths", "full_widths", "keep_for", "pruned_model", "round_width",
           "narrow", "sample_widths", "width_steps"]
