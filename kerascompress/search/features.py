"""What a configuration of widths leaves of a model: MACs per layer kind and weights, fast.

The search compares thousands of configurations; rebuilding a model for each is too
slow. Each node's MACs and parameters are counted once on the original graph and then
scaled by the fraction of its input and output channels a configuration keeps
(`cost_fractions`), grouped by layer kind, because kinds run at different speeds:
depthwise convolutions are memory-bound on CPUs, so a MAC there costs more time than a
MAC in a dense convolution.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from kerascompress.graph.channel_groups import ChannelGroups
from kerascompress.graph.counting import count_model
from kerascompress.graph.model_graph import ModelGraph
from kerascompress.graph.prune_channels import cost_fractions, removed_units
from kerascompress.search.widths import keep_for

#: Layer kinds whose MACs are counted apart (class name -> kind; others are "other").
KINDS = {
    "Conv1D": "conv", "Conv2D": "conv", "Conv3D": "conv", "Conv1DTranspose": "conv", "Conv2DTranspose": "conv",
    "Conv3DTranspose": "conv", "SeparableConv1D": "conv", "SeparableConv2D": "conv",
    "DepthwiseConv1D": "depthwise", "DepthwiseConv2D": "depthwise",
    "Dense": "dense", "EinsumDense": "dense",
}


class CostFeatures:
    """MACs by layer kind and weight count of any width configuration of one graph."""

    def __init__(self, graph: ModelGraph, groups: ChannelGroups) -> None:
        self.graph, self.groups = graph, groups
        cost = count_model(graph)
        self.order = list(groups.order)
        self.macs = np.array([cost.nodes[n].macs if n in cost.nodes else 0 for n in self.order], float)
        self.params = np.array([cost.nodes[n].params if n in cost.nodes else 0 for n in self.order], float)
        kinds = [KINDS.get(graph.nodes[n].class_name, "other") for n in self.order]
        present = sorted({k for k, m in zip(kinds, self.macs) if m > 0})
        self.kinds: list[str] = present
        self.kind_mask = {k: np.array([kk == k for kk in kinds]) for k in present}
        self._ones = {g.id: np.arange(g.size) for g in groups.prunable}
        self._cache: dict[tuple, np.ndarray] = {}

    def _fractions(self, widths: Mapping[int, int]) -> np.ndarray:
        key = tuple(sorted((int(g), int(w)) for g, w in widths.items()))
        if key not in self._cache:
            removed = removed_units(self.groups, keep_for(self._ones, widths))
            fr = cost_fractions(self.groups, self.graph, removed)
            self._cache[key] = np.array([fr[n] for n in self.order])
            if len(self._cache) > 20000:
                self._cache.clear()
        return self._cache[key]

    def macs_by_kind(self, widths: Mapping[int, int]) -> dict[str, float]:
        """MACs of the configuration per layer kind (the full model for ``{}``)."""
        scaled = self.macs * self._fractions(widths)
        return {k: float(scaled[m].sum()) for k, m in self.kind_mask.items()}

    def total_macs(self, widths: Mapping[int, int]) -> float:
        return float((self.macs * self._fractions(widths)).sum())

    def total_params(self, widths: Mapping[int, int]) -> float:
        """Weights left (each layer's weights scale with its kept inputs times kept outputs)."""
        return float((self.params * self._fractions(widths)).sum())

    def vector(self, widths: Mapping[int, int], kinds: list[str]) -> np.ndarray:
        """[1, MACs of each kind in ``kinds``] for a linear latency model."""
        by_kind = self.macs_by_kind(widths)
        return np.array([1.0] + [by_kind.get(k, 0.0) for k in kinds])
