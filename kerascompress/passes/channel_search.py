"""`ChannelSearch`: the fastest (or smallest) pruned model that keeps the accuracy budget.

NetAdapt-style, under the run's constraints:

1. a cost table per channel group, at the precision the model ships in: latency
   measured on the target's runtime (or read from a table measured on the device, or
   only without either estimated from MACs and labelled so), or bytes for a size
   objective;
2. a damage curve per group (the narrowed model's divergence from the original on
   training samples);
3. a path of configurations from the original to the smallest, each step cutting where
   a unit of cost is cheapest in damage (never uniformly);
4. bisection along the path: each candidate is pruned, briefly distilled from the
   original, and judged by the driver on the validation data (paired against the
   float32 baseline); the cheapest candidate within the accuracy budget wins;
5. one long distillation of the winner that stops on a plateau of held-out training
   samples, judged again; if it misses the budget the search steps back toward the
   original instead of giving up the structure altogether.

Every candidate it measured is in the details (widths, predicted and measured cost,
accuracy with its uncertainty, verdict), for the report's table and picture.
"""
from __future__ import annotations

import math
import time
from typing import Any, Callable, Optional

import keras
import numpy as np

from kerascompress.data.samples import n_samples, slice_samples
from kerascompress.errors import ConfigError, DataError
from kerascompress.graph.channel_groups import ChannelGroups, find_channel_groups
from kerascompress.graph.counting import count_model
from kerascompress.graph.model_graph import ModelGraph
from kerascompress.passes.base import Gate, ModelState, Pass, PassContext, PassOutput
from kerascompress.passes.importance import CRITERIA, channel_importance
from kerascompress.search.allocation import PathPoint, allocation_path, uniform_path
from kerascompress.search.cost_table import (
    CostTable,
    counted_table,
    estimate_from_macs,
    measured_table,
    model_signature,
    sample_widths,
)
from kerascompress.search.sensitivity import DamageProbe
from kerascompress.search.widths import describe_widths, full_widths, pruned_model, width_steps
from kerascompress.targets.target import Target
from kerascompress.training.finetune import finetune

#: Bytes a weight takes in the exported file, by precision mode.
BYTES_PER_PARAM = {"int8": 1.0, "int16x8": 1.0, "dynamic": 1.0, "fp16": 2.0, "mixed": 1.5, "float32": 4.0}


class ChannelSearch(Pass):
    """Searches per-group widths under the run's budgets, with distillation and verdicts on validation data.

    ``criterion``: which channels of a group go first ("l1", "l2", "bn_gamma", "taylor",
    or a registered one). ``channel_multiple`` overrides the target's width multiple.
    ``min_channels`` / ``max_ratio``: the narrowest a group may become. ``probe_samples``:
    training samples for the damage curves. ``table_points`` / ``table_runs``: widths
    measured per group and timed rounds of the latency table. ``rank_epochs``: the brief
    distillation of each bisection candidate (a fraction of an epoch is fine);
    ``final_epochs``: the ceiling of the last distillation, which stops after
    ``patience`` epochs without improvement on ``monitor_samples`` held-out training
    samples. ``learning_rate``, ``batch_size``, ``alpha`` (task-loss weight),
    ``temperature``: the distillation. ``tolerance``: bisection stops when neighbouring
    candidates differ by less than this fraction of cost. ``uniform``: search uniform
    widths instead (the control the benchmark compares against).
    """

    name = "channel_search"
    needs_data = True
    needs_labels = True

    def __init__(
        self,
        criterion: str = "l1",
        channel_multiple: Optional[int] = None,
        min_channels: int = 8,
        max_ratio: float = 0.875,
        probe_samples: int = 512,
        table_points: int = 6,
        table_runs: int = 40,
        rank_epochs: float = 0.25,
        final_epochs: int = 8,
        patience: int = 1,
        monitor_samples: int = 2000,
        learning_rate: float = 1e-3,
        batch_size: int = 128,
        alpha: float = 0.5,
        temperature: float = 4.0,
        tolerance: float = 0.04,
        max_candidates: int = 8,
        uniform: bool = False,
    ) -> None:
        if criterion not in CRITERIA:
            raise ConfigError(f"unknown importance criterion {criterion!r}; choose one of {', '.join(CRITERIA)}")
        if not 0.0 < max_ratio < 1.0:
            raise ConfigError(f"max_ratio must be in (0, 1), got {max_ratio}")
        if rank_epochs <= 0 or final_epochs < 1:
            raise ConfigError("rank_epochs must be > 0 and final_epochs >= 1")
        self.criterion = criterion
        self.channel_multiple = channel_multiple
        self.min_channels = int(min_channels)
        self.max_ratio = float(max_ratio)
        self.probe_samples = int(probe_samples)
        self.table_points = int(table_points)
        self.table_runs = int(table_runs)
        self.rank_epochs = float(rank_epochs)
        self.final_epochs = int(final_epochs)
        self.patience = int(patience)
        self.monitor_samples = int(monitor_samples)
        self.learning_rate = float(learning_rate)
        self.batch_size = int(batch_size)
        self.alpha = float(alpha)
        self.temperature = float(temperature)
        self.tolerance = float(tolerance)
        self.max_candidates = int(max_candidates)
        self.uniform = bool(uniform)

    def gate(self, target: Target, state: ModelState) -> Gate:
        m = self.channel_multiple or target.channel_multiple
        return Gate.allow(
            "size+latency",
            f"searches per-group widths (multiples of {m}) for the cheapest model within the accuracy budget, "
            f"costed {'on ' + target.name + ' at the precision it ships in' if target.runs_here() else 'by MACs or a device latency table'}",
        )

    def apply(self, state: ModelState, ctx: PassContext) -> PassOutput:
        return _Search(self, state, ctx).run()


class _Search:
    """One run of `ChannelSearch.apply`: its data, cost model, candidates and clock."""

    def __init__(self, p: ChannelSearch, state: ModelState, ctx: PassContext) -> None:
        if ctx.data is None or not ctx.data.can_train:
            raise DataError("ChannelSearch needs labelled training data: pass data=(x, y) to optimize()")
        self.p, self.state, self.ctx = p, state, ctx
        self.started = time.monotonic()
        constraints = ctx.constraints
        self.budget = float(getattr(constraints, "max_accuracy_drop", 0.01))
        self.objective = str(getattr(constraints, "objective", "latency"))
        self.deadline = self.started + float(getattr(constraints, "max_search_seconds", 1200.0) or 1200.0)
        self.multiple = int(p.channel_multiple or ctx.target.channel_multiple or 1)
        self.graph = ModelGraph.from_keras(state.model)
        self.groups: ChannelGroups = find_channel_groups(self.graph)
        self.candidates: list[dict[str, Any]] = []
        #: Path index -> (candidate, briefly distilled model) that the final phase may continue from.
        self.ranked: dict[int, tuple[dict[str, Any], keras.Model]] = {}
        self.epoch_seconds: Optional[float] = None
        self.stopped_by_time = False
        self._split_data()

    # ------------------------------------------------------------------ data
    def _split_data(self) -> None:
        """Fine-tune on the training part minus a monitor slice; probe damage on selection samples."""
        data = self.ctx.data
        n = n_samples(data.x_train)
        m = min(self.p.monitor_samples, max(0, n // 10))
        self.x_fit = slice_samples(data.x_train, 0, n - m)
        self.y_fit = np.asarray(data.y_train)[: n - m]
        self.monitor = (slice_samples(data.x_train, n - m, n), np.asarray(data.y_train)[n - m:]) if m else None
        self.x_probe, _ = data.selection(self.p.probe_samples)

    # ------------------------------------------------------------------ run
    def run(self) -> PassOutput:
        ctx, p = self.ctx, self.p
        scores = channel_importance(self.graph, self.groups, p.criterion, model=self.state.model,
                                    x=ctx.data.calibration() if p.criterion == "taylor" else None,
                                    y=ctx.data.y_train[: ctx.data.calibration_samples] if p.criterion == "taylor" else None)
        self.scores = scores
        steps = {g.id: width_steps(g.size, self.multiple, p.min_channels, p.max_ratio) for g in self.groups.prunable}
        steps = {g: ws for g, ws in steps.items() if len(ws) > 1}
        if not steps:
            return PassOutput(self.state, {"status": "nothing to search",
                                           "reason": f"no channel group can be narrowed in multiples of {self.multiple}"})
        full = full_widths(self.groups)
        probe = DamageProbe(self.state.model, self.x_probe)
        ctx.progress(f"channel search: {len(steps)} groups; measuring the cost of each width and its damage")
        table = self._cost_table(steps, probe)
        for gid, ws in steps.items():  # damage at the widths the table did not build (interpolated between)
            for w in sample_widths(ws, p.table_points)[1:]:
                if w not in probe.curves.get(gid, {}):
                    probe(gid, w, pruned_model(self.graph, self.groups, scores, {gid: w}, self.state.model.name))
        damage: Callable[[int, int], float] = lambda g, w: probe.damage(g, w, full[g])  # noqa: E731
        path = uniform_path(table, steps) if p.uniform else allocation_path(table, steps, damage)
        ctx.progress(f"channel search: {len(path)} configurations from {table.base:.4g} to {path[-1].cost:.4g} "
                     f"{table.unit} ({table.source})")
        passing, failing = self._bisect(path)
        final_model, final = self._finalise(path, passing, failing)
        details = self._details(table, probe, path, final)
        if final_model is None:
            return PassOutput(self.state, details)
        return PassOutput(self.state.replace(model=final_model), details)

    # ------------------------------------------------------------------ cost model
    def _cost_table(self, steps: dict[int, list[int]], probe: DamageProbe) -> CostTable:
        ctx, p = self.ctx, self.p
        signature = model_signature(self.state.model, self.groups)
        precision = self.state.precision.mode
        if self.objective == "size":
            return counted_table(self.graph, self.groups, steps, signature, "bytes",
                                 BYTES_PER_PARAM.get(precision, 4.0))
        given = ctx.latency_table
        if given is not None:
            table = given if isinstance(given, CostTable) else CostTable.load(given)
            table.check_matches(signature)
            return table
        if ctx.measures_latency:
            return measured_table(
                self.graph, self.groups, self.scores, steps,
                build=lambda m: ctx.build(self.state.replace(model=m)),
                time=lambda artifacts: ctx.time(artifacts, runs=p.table_runs),
                signature=signature, source=f"measured here on {ctx.target.name} ({self.state.precision.describe()})",
                max_points=p.table_points, name=self.state.model.name, target=ctx.target.name,
                precision=self.state.precision.describe(), on_model=probe,
            )
        return estimate_from_macs(counted_table(self.graph, self.groups, steps, signature, "macs"))

    # ------------------------------------------------------------------ candidates
    def _time_left(self) -> float:
        return self.deadline - time.monotonic()

    def _evaluate(self, index: int, point: PathPoint, epochs: float, phase: str,
                  start: Optional[keras.Model] = None) -> tuple[dict[str, Any], Any]:
        """Prune to ``point`` (or continue from ``start``), distil for ``epochs``, and have the driver judge it."""
        p, ctx = self.p, self.ctx
        started = time.monotonic()
        model = start if start is not None else pruned_model(
            self.graph, self.groups, self.scores, point.widths, self.state.model.name)
        history: list[dict] = []
        if epochs > 0:
            n_fit = n_samples(self.x_fit)
            whole = max(1, math.ceil(epochs))
            max_samples = None if epochs >= 1 else max(p.batch_size, int(n_fit * epochs))
            model = finetune(
                model, (self.x_fit, self.y_fit), epochs=whole, teacher=ctx.teacher,
                batch_size=p.batch_size, learning_rate=p.learning_rate, alpha=p.alpha, temperature=p.temperature,
                max_samples=max_samples, progress=lambda m: None, seed=ctx.seed,
                monitor=self.monitor if phase == "final" else None, patience=p.patience,
                schedule="cosine" if phase == "final" else "constant", history=history,
                **ctx.fine_tuning(model, f"{phase}-{index}"),
            )
            epochs_run = [h for h in history if h.get("epoch", 0) > 0]
            trained = sum(h["seconds"] for h in epochs_run)
            fraction = (max_samples or n_fit) / max(n_fit, 1)
            per_epoch = trained / max(len(epochs_run) * fraction, 1e-9)
            self.epoch_seconds = per_epoch if self.epoch_seconds is None else 0.5 * (self.epoch_seconds + per_epoch)
        verdict = ctx.judge(self.state.replace(model=model))
        drop = verdict.accuracy_drop
        if drop is None and verdict.top1_agreement is not None:
            drop = 1.0 - verdict.top1_agreement
        ok = drop is not None and drop <= self.budget + 1e-12
        cand = {
            "index": index, "phase": phase, "widths": describe_widths(self.groups, point.widths),
            "predicted_cost": round(point.cost, 6), "predicted_damage": round(point.damage, 6),
            "latency_ms": verdict.latency_ms, "size_bytes": verdict.size_bytes, "macs": verdict.macs,
            "accuracy": verdict.accuracy, "accuracy_drop": drop, "accuracy_drop_se": verdict.accuracy_drop_se,
            "epochs": sum(1 for h in history if h.get("epoch", 0) > 0) if phase == "final" else epochs, "verdict": "within budget" if ok else "over budget",
            "seconds": round(time.monotonic() - started, 1),
        }
        if history:
            cand["finetune"] = history
        if start is not None:
            cand["continued_from"] = "the briefly distilled candidate"
        self.candidates.append(cand)
        se = verdict.accuracy_drop_se
        ctx.progress(
            f"channel search [{phase}] #{index}: {point.cost:.4g} predicted, "
            + (f"{verdict.latency_ms:.4g} ms measured, " if verdict.latency_ms else "")
            + (f"drop {drop * 100:+.2f}" + (f" ± {1.96 * se * 100:.2f}" if se else "") + " points" if drop is not None else "")
            + f" -> {cand['verdict']} ({cand['seconds']:.0f}s)"
        )
        return cand, model

    def _final_seconds(self) -> float:
        """What one long distillation is expected to take (a few epochs at the measured speed)."""
        return (self.epoch_seconds or 60.0) * min(self.p.final_epochs, 4)

    def _bisect(self, path: list[PathPoint]) -> tuple[int, Optional[int]]:
        """(cheapest index found within budget after brief distillation, cheapest-by-one failing index or None).

        Bisection in log cost between the original (index 0, assumed within budget)
        and the smallest configuration; it stops at ``tolerance``, ``max_candidates``,
        or when the time left is needed for the final distillation.
        """
        p = self.p
        lo, hi, failing = 0, len(path) - 1, None
        evaluated = 0
        while hi - lo > 1 and evaluated < p.max_candidates:
            if path[lo].cost <= path[hi].cost * (1.0 + p.tolerance):
                break
            if self._time_left() <= 0 or (self.epoch_seconds is not None and self._time_left() < 2 * self._final_seconds()):
                self.ctx.progress("channel search: time budget reached; stopping the bisection")
                self.stopped_by_time = True
                break
            target = math.sqrt(max(path[lo].cost, 1e-12) * max(path[hi].cost, 1e-12))
            mid = min(range(lo + 1, hi), key=lambda i: abs(path[i].cost - target))
            cand, model = self._evaluate(mid, path[mid], p.rank_epochs, "rank")
            evaluated += 1
            self.ranked[mid] = (cand, model)
            if cand["verdict"] == "within budget":
                lo = mid
            else:
                hi = failing = mid
        for index in list(self.ranked):  # keep only the two models the final phase may continue from
            if index not in (lo, failing):
                del self.ranked[index]
        return lo, failing

    def _final_epochs(self) -> int:
        """The final distillation's ceiling, cut to what the time budget still allows (at least one epoch)."""
        if self.epoch_seconds is None:
            return self.p.final_epochs
        return max(1, min(self.p.final_epochs, int(self._time_left() // max(self.epoch_seconds, 1e-9))))

    def _finalise(self, path: list[PathPoint], passing: int, failing: Optional[int]) -> tuple[Optional[keras.Model], dict]:
        """Long distillation, then the driver's verdict; step back toward the original while it misses.

        The first candidate that failed after brief distillation is tried first when
        there is time for two long runs (longer distillation recovers more), then the
        cheapest that passed; after that, halfway back toward the original each time.
        """
        order = []
        if failing is not None and (passing == 0 or self._time_left() > 2.5 * self._final_seconds()):
            order.append(failing)
        if passing > 0:
            order.append(passing)
        closest: Optional[dict] = None
        tried: set[int] = set()
        while order:
            index = order.pop(0)
            if index in tried or index <= 0:
                continue
            tried.add(index)
            ranked = self.ranked.get(index)
            cand, model = self._evaluate(index, path[index], self._final_epochs(), "final",
                                         start=ranked[1] if ranked else None)
            if cand["verdict"] == "within budget":
                cand["chosen"] = True
                return model, cand
            if ranked and ranked[0]["verdict"] == "within budget":
                # Longer distillation did not help here; the briefly distilled candidate was within budget.
                ranked[0]["chosen"] = True
                ranked[0]["note"] = "kept after brief distillation: the longer run measured worse"
                return ranked[1], ranked[0]
            if closest is None or (cand["accuracy_drop"] or 1.0) < (closest["accuracy_drop"] or 1.0):
                closest = cand
            if not order and self._time_left() > self._final_seconds():
                order.append(min(tried) // 2)  # halfway back toward the original (path index 0)
        return None, {"chosen": False, "closest": closest}

    # ------------------------------------------------------------------ report
    def _details(self, table: CostTable, probe: DamageProbe, path: list[PathPoint], final: dict) -> dict[str, Any]:
        before = count_model(self.graph)
        out: dict[str, Any] = {
            "objective": self.objective,
            "budget_points": round(self.budget * 100, 3),
            "cost_model": {"unit": table.unit, "source": table.source, "is_estimate": table.is_estimate,
                           "base": table.base, "notes": table.notes},
            "channel_multiple": self.multiple,
            "criterion": self.p.criterion,
            "path_length": len(path),
            "candidates": self.candidates,
            "damage_curves": probe.as_dict(),
            "macs_before": int(before.macs),
            "params_before": int(before.params),
            "seconds": round(time.monotonic() - self.started, 1),
            "stopped_by_time_budget": self.stopped_by_time,
            "widths_original": describe_widths(self.groups, full_widths(self.groups)),
        }
        if final.get("chosen"):
            out["chosen"] = final
        elif not self.candidates:
            out["nothing_passed"] = (
                f"the time budget (max_search_seconds={self.deadline - self.started:.0f}) ran out before a candidate "
                "was tried; the model is left unpruned"
            )
        else:
            out["nothing_passed"] = (
                "no pruned candidate kept the accuracy budget; the model is left unpruned"
                + (f"; the closest: drop {final['closest']['accuracy_drop'] * 100:+.2f} points at "
                   f"{final['closest']['predicted_cost']:.4g} {table.unit}" if final.get("closest") else "")
            )
        return out


__all__ = ["ChannelSearch"]
