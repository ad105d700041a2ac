"""`ChannelPruning`: remove whole channels so the model really gets smaller and faster.

Unlike magnitude pruning, which only zeroes weights (same file size, same speed on
dense kernels), this cuts channels out of every layer they flow through and rebuilds a
narrower model. Widths are rounded to the target's `channel_multiple` so SIMD lanes and
tensor cores stay full: odd widths can make a pruned model slower.
"""
from __future__ import annotations

import math
import time
from typing import Any, Mapping, Optional

import numpy as np

from kerascompress.data.samples import n_samples
from kerascompress.errors import ConfigError, DataError
from kerascompress.graph.channel_groups import ChannelGroups, find_channel_groups
from kerascompress.graph.counting import count_model
from kerascompress.graph.model_graph import ModelGraph
from kerascompress.graph.prune_channels import (
    cost_fractions,
    prune_channels,
    removed_units,
)
from kerascompress.passes.base import Gate, ModelState, Pass, PassContext, PassOutput
from kerascompress.passes.importance import (
    channel_importance,
    check_criterion,
    criterion_needs_data,
)
from kerascompress.targets.target import Target
from kerascompress.training.finetune import finetune

Keep = dict[int, np.ndarray]


def round_width(size: int, wanted: float, multiple: int, min_channels: int) -> int:
    """Channels to keep: ``wanted`` rounded up to ``multiple``, at least ``min_channels``, at most ``size``."""
    multiple = max(1, int(multiple))
    k = max(wanted, min_channels, 1)
    k = int(math.ceil(k / multiple - 1e-9)) * multiple
    return int(min(k, size))


def select_channels(
    groups: ChannelGroups,
    scores: Mapping[int, np.ndarray],
    ratio: float = 0.0,
    *,
    group_ratios: Optional[Mapping[int, float]] = None,
    global_ranking: bool = False,
    multiple: int = 1,
    min_channels: int = 1,
    max_ratio: float = 0.9,
) -> Keep:
    """Which channels each prunable group keeps (sorted indices), highest scores first.

    Uniform: every group removes ``ratio`` of its channels (``group_ratios`` overrides
    per group). Global: channels of all groups are ranked together (scores are already
    mean-normalised per group) and the lowest ``ratio`` go, no group losing more than
    ``max_ratio``. Every width is then rounded by `round_width`.
    """
    group_ratios = dict(group_ratios or {})
    prunable = [g for g in groups.prunable if g.id in scores]
    wanted: dict[int, float] = {}
    if global_ranking and ratio > 0:
        everything = np.concatenate([scores[g.id] for g in prunable]) if prunable else np.zeros(0)
        thr = np.quantile(everything, ratio) if len(everything) else 0.0
        for g in prunable:
            r = min(float((scores[g.id] < thr).mean()), max_ratio)
            wanted[g.id] = g.size * (1 - group_ratios.get(g.id, r))
    else:
        for g in prunable:
            wanted[g.id] = g.size * (1 - min(group_ratios.get(g.id, ratio), max_ratio))
    keep: Keep = {}
    for g in prunable:
        k = round_width(g.size, wanted[g.id], multiple, min_channels)
        if k < g.size:
            order = np.argsort(-scores[g.id], kind="stable")
            keep[g.id] = np.sort(order[:k])
    return keep


class ChannelPruning(Pass):
    """Structured channel pruning with exact graph surgery.

    Choose how much: ``ratio`` (fraction of channels removed per group; with
    ``global_ranking`` the fraction over all groups), ``layer_ratios`` (layer name ->
    ratio for the groups that layer produces), or a target: ``macs_target`` /
    ``params_target`` as a fraction (<= 1) of the original or an absolute count.
    ``criterion``: "l1", "l2", "bn_gamma" (no data needed), "taylor" (needs data), or a
    name given to `kerascompress.passes.importance.register_importance`.
    ``channel_multiple`` overrides the target's. ``finetune_epochs`` > 0 fine-tunes
    afterwards, distilling from the unpruned model when ``distill``.
    """

    name = "channel_pruning"
    tf_keras_unsupported = (
        "structured pruning needs a Keras 3 model: it rewrites the Keras 3 layer graph. For a tf_keras model use "
        "Sparsity or Cluster (tfmot), or rebuild the model with Keras 3"
    )

    def __init__(
        self,
        ratio: float = 0.0,
        *,
        global_ranking: bool = False,
        layer_ratios: Optional[Mapping[str, float]] = None,
        macs_target: Optional[float] = None,
        params_target: Optional[float] = None,
        criterion: str = "l1",
        min_channels: int = 4,
        channel_multiple: Optional[int] = None,
        max_ratio: float = 0.9,
        finetune_epochs: int = 0,
        distill: bool = True,
        taylor_batches: int = 4,
        finetune_options: Optional[Mapping[str, Any]] = None,
    ) -> None:
        check_criterion(criterion)
        if not 0.0 <= ratio < 1.0 or not 0.0 < max_ratio < 1.0:
            raise ConfigError("ratio must be in [0, 1) and max_ratio in (0, 1)")
        if macs_target is not None and params_target is not None:
            raise ConfigError("give macs_target or params_target, not both")
        self.ratio = float(ratio)
        self.global_ranking = bool(global_ranking)
        self.layer_ratios = dict(layer_ratios or {})
        self.macs_target = macs_target
        self.params_target = params_target
        self.criterion = criterion
        self.min_channels = int(min_channels)
        self.channel_multiple = channel_multiple
        self.max_ratio = float(max_ratio)
        self.finetune_epochs = int(finetune_epochs)
        self.distill = bool(distill)
        self.taylor_batches = int(taylor_batches)
        self.finetune_options = dict(finetune_options or {})

    @property
    def needs_data(self) -> bool:  # type: ignore[override]
        return criterion_needs_data(self.criterion) or self.finetune_epochs > 0

    def gate(self, target: Target, state: ModelState) -> Gate:
        m = self.channel_multiple or target.channel_multiple
        return Gate.allow(
            "size+latency",
            f"removes whole channels: fewer parameters and MACs on any runtime; widths rounded to multiples of {m}"
            + (f" (source: {target.source('channel_multiple')})" if target.source("channel_multiple") else ""),
        )

    # ----------------------------------------------------------------- apply

    def apply(self, state: ModelState, ctx: PassContext) -> PassOutput:
        t0 = time.perf_counter()
        if self.needs_data and (ctx.data is None):
            raise DataError(
                f"ChannelPruning with criterion={self.criterion!r} and finetune_epochs={self.finetune_epochs} "
                "needs data; pass data= or use a weight criterion without fine-tuning"
            )
        graph = ModelGraph.from_keras(state.model)
        groups = find_channel_groups(graph)
        before = count_model(graph)
        multiple = int(self.channel_multiple or ctx.target.channel_multiple or 1)
        ctx.progress(
            f"channel pruning: {len(groups.prunable)} prunable groups, {len(groups.frozen)} frozen; "
            f"scoring by {self.criterion}"
        )
        x = y = None
        if criterion_needs_data(self.criterion):
            x = ctx.data.calibration()
            yt = ctx.data.y_train
            y = yt[: n_samples(x)] if yt is not None and len(yt) >= n_samples(x) else None
        scores = channel_importance(graph, groups, self.criterion, model=state.model, x=x, y=y,
                                    batches=self.taylor_batches)
        keep = self._plan(graph, groups, scores, multiple, before)
        pruned = prune_channels(graph, groups, keep).to_keras(name=state.model.name)
        after = count_model(pruned)
        if self.macs_target is not None or self.params_target is not None:
            keep, pruned, after = self._meet_target(graph, groups, scores, multiple, before, keep, pruned, after)
        prune_seconds = time.perf_counter() - t0
        if self.finetune_epochs > 0:
            teacher = (ctx.teacher or state.model) if self.distill else None
            pruned = finetune(pruned, ctx.data, self.finetune_epochs, teacher=teacher, progress=ctx.progress,
                              seed=ctx.seed, **{**ctx.fine_tuning(pruned), **self.finetune_options})
        details = self._details(groups, keep, before, after, multiple, prune_seconds)
        ctx.progress(
            f"channel pruning: MACs {before.macs:,} -> {after.macs:,}, params {before.params:,} -> {after.params:,}"
        )
        return PassOutput(state.replace(model=pruned), details)

    # ----------------------------------------------------------------- planning

    def _group_ratios(self, graph: Any, groups: ChannelGroups) -> dict[int, float]:
        out: dict[int, float] = {}
        if not self.layer_ratios:
            return out
        known = {n.layer_name for n in graph.nodes.values()}
        unknown = [k for k in self.layer_ratios if k not in known]
        if unknown:
            raise ConfigError(f"layer_ratios names unknown layers {unknown}; layer names: {sorted(known)[:20]}...")
        for g in groups.prunable:
            rs = [self.layer_ratios[graph.nodes[p].layer_name] for p in g.producers
                  if graph.nodes[p].layer_name in self.layer_ratios]
            if rs:
                out[g.id] = max(rs)
        return out

    def _select(self, graph, groups, scores, multiple, ratio) -> Keep:
        group_ratios = self._group_ratios(graph, groups)  # named layers override `ratio`
        return select_channels(
            groups, scores, ratio, group_ratios=group_ratios, global_ranking=self.global_ranking,
            multiple=multiple, min_channels=self.min_channels, max_ratio=self.max_ratio,
        )

    def _goal(self, before) -> tuple[str, float]:
        if self.macs_target is not None:
            t = float(self.macs_target)
            return "macs", t * before.macs if t <= 1.0 else t
        t = float(self.params_target)
        return "params", t * before.params if t <= 1.0 else t

    def _plan(self, graph, groups, scores, multiple, before) -> Keep:
        if self.macs_target is None and self.params_target is None:
            return self._select(graph, groups, scores, multiple, self.ratio)
        kind, goal = self._goal(before)
        base = np.array([getattr(before.nodes[n], kind) if n in before.nodes else 0 for n in groups.order], float)

        def estimate(keep: Keep) -> float:
            fr = cost_fractions(groups, graph, removed_units(groups, keep))
            return float(np.dot(base, [fr[n] for n in groups.order]))

        lo, hi = 0.0, self.max_ratio
        best = self._select(graph, groups, scores, multiple, hi)
        for _ in range(14):  # bisection on the ratio: cost falls as the ratio grows
            mid = (lo + hi) / 2
            keep = self._select(graph, groups, scores, multiple, mid)
            if estimate(keep) <= goal:
                hi, best = mid, keep
            else:
                lo = mid
        self._ratio_found = hi
        return best

    def _meet_target(self, graph, groups, scores, multiple, before, keep, pruned, after):
        """The estimate ignores small terms; raise the ratio a little until the real count meets the goal."""
        kind, goal = self._goal(before)
        r = getattr(self, "_ratio_found", self.ratio)

        while getattr(after, kind) > goal and r < self.max_ratio:
            r = min(self.max_ratio, r + 0.02)
            keep = self._select(graph, groups, scores, multiple, r)
            pruned = prune_channels(graph, groups, keep).to_keras(name=pruned.name)
            after = count_model(pruned)
        return keep, pruned, after

    def _details(self, groups, keep, before, after, multiple, seconds) -> dict[str, Any]:
        pruned_groups = []
        for g in groups.prunable:
            kept = len(keep[g.id]) if g.id in keep else g.size
            pruned_groups.append({"id": g.id, "producers": g.producers, "channels": g.size,
                                  "kept": int(kept), "removed": int(g.size - kept)})
        frozen = [{"id": g.id, "producers": g.producers, "channels": g.size, "reasons": g.frozen}
                  for g in groups.frozen]
        return {
            "criterion": self.criterion,
            "channel_multiple": multiple,
            "groups": pruned_groups,
            "frozen_groups": frozen,
            "macs_before": int(before.macs),
            "macs_after": int(after.macs),
            "params_before": int(before.params),
            "params_after": int(after.params),
            "mac_reduction": round(before.macs / max(after.macs, 1), 3),
            "pruning_seconds": round(seconds, 2),
            "finetune_epochs": self.finetune_epochs,
        }
