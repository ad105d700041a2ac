"""`ChannelSearch`: the fastest (or smallest) pruned model that keeps the accuracy budget.

NetAdapt-style, under the run's constraints:

1. a cost model at the precision the model ships in: latency fitted to whole
   configurations measured on the target's runtime (or read from a table measured on
   the device with ``kerascompress profile``, or only without either estimated from
   MACs and labelled so), or weight bytes for a size objective;
2. a damage curve per group: the divergence of the model with that group narrowed
   from the original, BatchNormalization statistics re-estimated, on training samples;
3. a path of configurations from the original to the smallest, each step cutting where
   a unit of cost is cheapest in damage (never uniformly);
4. a walk down the path with one student: at each checkpoint (each a step cheaper than
   the last) the student is narrowed further, briefly distilled from the original, and
   judged by the driver on the validation data (paired against the float32 baseline);
   the walk stops when the drop exceeds the budget by more than a brief distillation
   can be expected to hide (``walk_slack``), at a hard latency or size budget, or when
   the time left is needed for the end;
5. one long distillation of the cheapest checkpoint within reach (cosine schedule,
   stops on a plateau of held-out training samples), judged again; when it misses the
   budget the search steps back halfway toward the original (bisection over the walked
   checkpoints, whose students it kept) instead of giving the structure up; when it
   passes and time is left, it bisects forward toward the checkpoint where the walk
   stopped, narrowing the distilled winner further.

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
from kerascompress.passes.importance import CRITERIA, channel_importance, criterion_needs_data
from kerascompress.search.allocation import PathPoint, allocation_path, uniform_path
from kerascompress.search.cost_model import (
    CostModel,
    counted_model,
    estimate_from_macs,
    measured_model,
    model_signature,
)
from kerascompress.search.features import CostFeatures
from kerascompress.search.sensitivity import DamageProbe
from kerascompress.search.widths import describe_widths, full_widths, narrow, pruned_model, sample_widths, width_steps
from kerascompress.targets.target import Target
from kerascompress.training.batchnorm import recalibrate_batchnorm
from kerascompress.training.finetune import finetune

#: Bytes a weight takes in the exported file, by precision mode.
BYTES_PER_PARAM = {"int8": 1.0, "int16x8": 1.0, "dynamic": 1.0, "fp16": 2.0, "mixed": 1.5, "float32": 4.0}


class ChannelSearch(Pass):
    """Searches per-group widths under the run's budgets, with distillation and verdicts on validation data.

    ``criterion``: which channels of a group go first ("l1", "l2", "bn_gamma", "taylor",
    or a registered one). ``channel_multiple`` overrides the target's width multiple.
    ``min_channels`` / ``max_ratio``: the narrowest a group may become. ``probe_samples``:
    training samples for the damage curves; ``probe_points``: widths probed per group
    (damage is interpolated between them). ``latency_configs`` / ``latency_runs``:
    random whole configurations measured to fit the latency model, and timed rounds of
    each. ``checkpoint_step``: each walk checkpoint costs at most this fraction of the
    previous one; ``walk_epochs``: distillation at each checkpoint (a fraction of an
    epoch); ``walk_slack``: how far (accuracy, absolute) beyond the budget a briefly
    distilled checkpoint may be and the walk still go on: brief distillation shows how
    fast a configuration recovers, not where it ends (on the residual CNN of
    benchmarks/bench_search.py a checkpoint 2.7 points down after its brief
    distillation ended 0.4 points *above* the baseline after the long one), so the
    default lets the walk go 5 points past the budget and leaves the verdict to the
    long distillation, stepping back when it misses. ``final_epochs``: the ceiling
    of the last distillation, which stops after ``patience`` epochs without improvement
    on ``monitor_samples`` held-out training samples. ``learning_rate``, ``batch_size``,
    ``alpha`` (task-loss weight), ``temperature``: the distillation. ``uniform``: walk
    uniform widths instead (the control the benchmark compares against).
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
        probe_samples: int = 1024,
        probe_points: int = 5,
        latency_configs: int = 12,
        latency_runs: int = 40,
        checkpoint_step: float = 0.8,
        walk_epochs: float = 0.25,
        walk_slack: float = 0.05,
        final_epochs: int = 4,
        patience: int = 2,
        monitor_samples: int = 2000,
        learning_rate: float = 1e-3,
        batch_size: int = 128,
        alpha: float = 0.5,
        temperature: float = 4.0,
        uniform: bool = False,
    ) -> None:
        if criterion not in CRITERIA:
            raise ConfigError(f"unknown importance criterion {criterion!r}; choose one of {', '.join(CRITERIA)}")
        if not 0.0 < max_ratio < 1.0:
            raise ConfigError(f"max_ratio must be in (0, 1), got {max_ratio}")
        if not 0.0 < checkpoint_step < 1.0:
            raise ConfigError(f"checkpoint_step is the cost ratio between checkpoints, in (0, 1); got {checkpoint_step}")
        if walk_epochs <= 0 or final_epochs < 1 or walk_slack < 0:
            raise ConfigError("walk_epochs must be > 0, final_epochs >= 1 and walk_slack >= 0")
        self.criterion = criterion
        self.channel_multiple = channel_multiple
        self.min_channels = int(min_channels)
        self.max_ratio = float(max_ratio)
        self.probe_samples = int(probe_samples)
        self.probe_points = int(probe_points)
        self.latency_configs = int(latency_configs)
        self.latency_runs = int(latency_runs)
        self.checkpoint_step = float(checkpoint_step)
        self.walk_epochs = float(walk_epochs)
        self.walk_slack = float(walk_slack)
        self.final_epochs = int(final_epochs)
        self.patience = int(patience)
        self.monitor_samples = int(monitor_samples)
        self.learning_rate = float(learning_rate)
        self.batch_size = int(batch_size)
        self.alpha = float(alpha)
        self.temperature = float(temperature)
        self.uniform = bool(uniform)

    def gate(self, target: Target, state: ModelState) -> Gate:
        m = self.channel_multiple or target.channel_multiple
        costed = (f"on {target.name} at the precision it ships in" if target.runs_here()
                  else "by a device latency table, or estimated from MACs")
        return Gate.allow(
            "size+latency",
            f"searches per-group widths (multiples of {m}) for the cheapest model within the accuracy budget, "
            f"costed {costed}",
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
        self.constraints = ctx.constraints
        self.budget = float(getattr(self.constraints, "max_accuracy_drop", 0.01))
        self.objective = str(getattr(self.constraints, "objective", "latency"))
        self.deadline = self.started + float(getattr(self.constraints, "max_search_seconds", 1200.0) or 1200.0)
        self.multiple = int(p.channel_multiple or ctx.target.channel_multiple or 1)
        self.graph = ModelGraph.from_keras(state.model)
        self.groups: ChannelGroups = find_channel_groups(self.graph)
        self.candidates: list[dict[str, Any]] = []
        #: Walk checkpoint index -> (candidate, student) the final phase may continue from.
        self.kept: dict[int, tuple[dict[str, Any], keras.Model]] = {}
        self.epoch_seconds: Optional[float] = None
        self.stopped_by_time = False
        self.walk_end = ""
        self.cost_budget: Optional[float] = None
        self.cost_unit = ""
        self._split_data()

    # ------------------------------------------------------------------ data
    def _split_data(self) -> None:
        """Fine-tune on the training part minus a monitor slice; probe damage on selection samples.

        A finite stream (a tf.data.Dataset, a callable of batches) is trained on whole,
        after the examples held out as the monitor; an endless one (or a generator object,
        which can be read once) leaves the search the first examples held as arrays, and
        the report says so.
        """
        data = self.ctx.data
        n = n_samples(data.x_train)
        m = min(self.p.monitor_samples, max(0, n // 10))
        self.x_probe, _ = data.selection(self.p.probe_samples)
        self.data_notes: list[str] = []
        self.fit_stream = None
        self.stream_examples = 0
        self.fit_offset = 0
        self.distillations = 0
        stream = data.train_stream
        if stream is not None and not stream.single_pass and self._stream_length(stream) is not None:
            per_element = stream.first_batch_size() if stream.batched else 1
            m = min(self.p.monitor_samples, n // 2)  # the head is a small part of the stream: up to half of it
            skip = math.ceil(m / per_element) if m else 0
            m = min(n, skip * per_element)
            self.monitor = (slice_samples(data.x_train, 0, m), np.asarray(data.y_train)[:m]) if m else None
            self.fit_stream = stream.after(skip)
            self.fit_elements = max(1, self.stream_elements - skip)
            self.per_element = per_element
            # examples after the monitor part: counted exactly, or whole batches where the source gave its length
            self.n_fit = (self.stream_examples - m) if self.stream_examples else self.fit_elements * per_element
            self.x_fit = slice_samples(data.x_train, m, n) if n > m else data.x_train
            return
        if stream is not None:
            self.data_notes.append(f"the training data is a stream that never ends (or can be read only once), so the "
                                   f"search fine-tunes on its first {n} examples only; pass a finite tf.data.Dataset "
                                   "(no endless repeat()) to train on all of it")
        self.x_fit = slice_samples(data.x_train, 0, n - m)
        self.y_fit = np.asarray(data.y_train)[: n - m]
        self.n_fit = n - m
        self.monitor = (slice_samples(data.x_train, n - m, n), np.asarray(data.y_train)[n - m:]) if m else None

    def _stream_length(self, stream: Any) -> Optional[int]:
        """Elements in the stream (counted once if its source does not say), or None when endless."""
        import tensorflow as tf

        known = stream.cardinality()
        if known is None:
            if int(stream.dataset().cardinality()) == int(tf.data.INFINITE_CARDINALITY):
                return None
            self.ctx.progress("channel search: counting the training stream once (its length is not known)")

            def count(state: Any, element: Any) -> Any:
                rows = tf.shape(tf.nest.flatten(element)[0])[0] if stream.batched else 1
                return state[0] + 1, state[1] + tf.cast(rows, tf.int64)

            elements, examples = stream.dataset().reduce((np.int64(0), np.int64(0)), count)
            known, self.stream_examples = int(elements), int(examples)
        self.stream_elements = int(known)
        return self.stream_elements if known > 0 else None

    def _fit_data(self, epochs: float) -> tuple[Any, Optional[int]]:
        """What one distillation reads, and its examples per epoch at most.

        Short distillations (under an epoch) read successive windows of the training data
        (arrays: a new shuffle each time; a stream: the next part), so the walk's
        checkpoints together see all of it rather than the same first part again.
        """
        self.distillations += 1
        if self.fit_stream is None:
            max_samples = None if epochs >= 1 else max(self.p.batch_size, int(self.n_fit * epochs))
            return (self.x_fit, self.y_fit), max_samples
        if epochs >= 1:  # capped at its known length: the cosine schedule needs the steps per epoch
            return self.fit_stream, self.n_fit
        take = max(1, min(self.fit_elements, math.ceil(self.fit_elements * epochs)))
        if self.fit_offset + take > self.fit_elements:
            self.fit_offset = 0
        window = self.fit_stream.after(self.fit_offset)
        self.fit_offset += take
        return window, take * self.per_element

    # ------------------------------------------------------------------ run
    def run(self) -> PassOutput:
        ctx, p = self.ctx, self.p
        needs = criterion_needs_data(p.criterion)
        self.scores = channel_importance(
            self.graph, self.groups, p.criterion, model=self.state.model,
            x=ctx.data.calibration() if needs else None,
            y=ctx.data.y_train[: ctx.data.calibration_samples] if needs else None)
        steps = {g.id: width_steps(g.size, self.multiple, p.min_channels, p.max_ratio) for g in self.groups.prunable}
        steps = {g: ws for g, ws in steps.items() if len(ws) > 1}
        if not steps:
            return PassOutput(self.state, {"reason": f"no channel group can be narrowed in multiples of {self.multiple}"})
        full = full_widths(self.groups)
        features = CostFeatures(self.graph, self.groups)
        ctx.progress(f"channel search: {len(steps)} groups; measuring what widths cost and what they damage")
        model = self._cost_model(steps, features)
        cost: Callable[[dict[int, int]], float] = lambda widths: model.predict(features, widths)  # noqa: E731
        probe = DamageProbe(self.state.model, self.x_probe)
        recal = slice_samples(self.x_fit, 0, 2048)
        for gid, ws in steps.items():  # damage is interpolated between the probed widths
            for w in sample_widths(ws, p.probe_points)[1:]:
                narrowed = pruned_model(self.graph, self.groups, self.scores, {gid: w}, self.state.model.name)
                probe(gid, w, recalibrate_batchnorm(narrowed, recal))
        damage: Callable[[int, int], float] = lambda g, w: probe.damage(g, w, full[g])  # noqa: E731
        path = uniform_path(cost, steps) if p.uniform else allocation_path(cost, steps, damage)
        fit = f", fit error {model.fit_error * 100:.1f}%" if model.fit_error is not None else ""
        ctx.progress(f"channel search: {len(path)} configurations from {path[0].cost:.4g} to {path[-1].cost:.4g} "
                     f"{model.unit} ({model.source}{fit})")
        self.cost_budget, self.cost_unit = self._cost_budget(model), model.unit
        walked = self._walk(path, self._checkpoints(path))
        final_model, final = self._finalise(path, walked)
        details = self._details(model, probe, path, final)
        if final_model is None:
            return PassOutput(self.state, details)
        return PassOutput(self.state.replace(model=final_model), details)

    # ------------------------------------------------------------------ cost model
    def _cost_model(self, steps: dict[int, list[int]], features: CostFeatures) -> CostModel:
        ctx, p = self.ctx, self.p
        signature = model_signature(self.state.model, self.groups)
        if self.objective == "size":
            return counted_model(features, signature, "bytes", BYTES_PER_PARAM.get(self.state.precision.mode, 4.0))
        given = ctx.latency_table
        if given is not None:
            model = given if isinstance(given, CostModel) else CostModel.load(given)
            model.check_matches(signature)
            if model.precision and model.precision != self.state.precision.describe():
                model.notes.append(f"measured at {model.precision}; the model ships at "
                                   f"{self.state.precision.describe()}")
            return model
        if ctx.measures_latency:
            return measured_model(
                self.graph, self.groups, features, self.scores, steps,
                build=lambda m: ctx.build(self.state.replace(model=m)),
                time=lambda artifacts: ctx.time(artifacts, runs=p.latency_runs),
                signature=signature, source=f"measured here on {ctx.target.name} ({self.state.precision.describe()})",
                n_random=p.latency_configs, seed=ctx.seed, name=self.state.model.name, target=ctx.target.name,
                precision=self.state.precision.describe(),
            )
        return estimate_from_macs(counted_model(features, signature, "macs"))

    def _cost_budget(self, model: CostModel) -> Optional[float]:
        """The run's hard budget in the cost model's unit (the walk stops there), or None."""
        c = self.constraints
        if c is None:
            return None
        baseline = getattr(self.ctx, "baseline", None)
        if model.unit == "ms" and not model.is_estimate:
            return c.latency_budget_ms(getattr(baseline, "latency_ms", None))
        if model.unit == "bytes":
            return c.size_budget_bytes(getattr(baseline, "size_bytes", None))
        if model.unit == "macs" and c.max_macs is not None:
            return float(c.max_macs)
        return None

    # ------------------------------------------------------------------ candidates
    def _time_left(self) -> float:
        return self.deadline - time.monotonic()

    def _distil(self, model: keras.Model, epochs: float, final: bool, label: str) -> tuple[keras.Model, list[dict]]:
        p, ctx = self.p, self.ctx
        history: list[dict] = []
        n_fit = self.n_fit
        whole = max(1, math.ceil(epochs))
        data, max_samples = self._fit_data(epochs)
        model = finetune(
            model, data, epochs=whole, teacher=ctx.teacher,
            batch_size=p.batch_size, learning_rate=p.learning_rate, alpha=p.alpha, temperature=p.temperature,
            max_samples=max_samples, progress=lambda m: None, seed=ctx.seed + self.distillations,
            monitor=self.monitor if final else None, patience=p.patience,
            schedule="cosine" if final else "constant", history=history,
            **ctx.fine_tuning(model, label),
        )
        epochs_run = [h for h in history if h.get("epoch", 0) > 0]
        if epochs_run:
            fraction = (max_samples or n_fit) / max(n_fit, 1)
            per_epoch = sum(h["seconds"] for h in epochs_run) / max(len(epochs_run) * fraction, 1e-9)
            self.epoch_seconds = per_epoch if self.epoch_seconds is None else 0.5 * (self.epoch_seconds + per_epoch)
        return model, history

    def _judge(self, index: int, point: PathPoint, model: keras.Model, phase: str, started: float,
               history: list[dict]) -> dict[str, Any]:
        """The driver's verdict on ``model``, recorded as a candidate."""
        verdict = self.ctx.judge(self.state.replace(model=model))
        drop = verdict.accuracy_drop
        if drop is None and verdict.top1_agreement is not None:
            drop = 1.0 - verdict.top1_agreement
        ok = drop is not None and drop <= self.budget + 1e-12
        trained = sum(1 for h in history if h.get("epoch", 0) > 0) if phase != "walk" else self.p.walk_epochs
        cand = {
            "index": index, "phase": phase, "widths": describe_widths(self.groups, point.widths),
            "predicted_cost": round(point.cost, 6), "predicted_damage": round(point.damage, 6),
            "latency_ms": verdict.latency_ms, "size_bytes": verdict.size_bytes, "macs": verdict.macs,
            "accuracy": verdict.accuracy, "accuracy_drop": drop, "accuracy_drop_se": verdict.accuracy_drop_se,
            "epochs": trained, "verdict": "within budget" if ok else "over budget",
            "seconds": round(time.monotonic() - started, 1),
        }
        if history and phase != "walk":
            cand["finetune"] = history
        self.candidates.append(cand)
        se = verdict.accuracy_drop_se
        self.ctx.progress(
            f"channel search [{phase}] #{index}: {point.cost:.4g} predicted, "
            + (f"{verdict.latency_ms:.4g} ms measured, " if verdict.latency_ms else "")
            + (f"drop {drop * 100:+.2f}" + (f" ± {1.96 * se * 100:.2f}" if se else "") + " points" if drop is not None else "")
            + f" -> {cand['verdict']} ({cand['seconds']:.0f}s)"
        )
        return cand

    def _meets_budget(self, point: PathPoint, cand: dict[str, Any]) -> bool:
        """Whether a checkpoint meets the hard cost budget (measured latency where there is one)."""
        if self.cost_budget is None:
            return False
        if self.cost_unit == "ms" and cand.get("latency_ms") is not None:
            return cand["latency_ms"] <= self.cost_budget
        if self.cost_unit == "bytes" and cand.get("size_bytes") is not None:
            return cand["size_bytes"] <= self.cost_budget
        return point.cost <= self.cost_budget

    def _epochs_that_fit(self) -> int:
        """``final_epochs``, or fewer (at least one) when the time left holds fewer."""
        if self.epoch_seconds is None:
            return self.p.final_epochs
        return max(1, min(self.p.final_epochs, int(self._time_left() // max(self.epoch_seconds, 1e-9))))

    def _final_seconds(self) -> float:
        """What the long distillation is expected to take at the measured speed."""
        return (self.epoch_seconds or 60.0) * self.p.final_epochs

    def _step_seconds(self) -> float:
        """What one walk checkpoint is expected to take (its distillation and the verdict)."""
        return (self.epoch_seconds or 60.0) * self.p.walk_epochs + 10.0

    def _checkpoints(self, path: list[PathPoint]) -> list[int]:
        """Path indices to stop at: each at most ``checkpoint_step`` of the previous one's cost, and the last."""
        out, last = [], path[0].cost
        for i, point in enumerate(path[1:], start=1):
            if point.cost <= last * self.p.checkpoint_step or i == len(path) - 1:
                out.append(i)
                last = point.cost
        return out

    def _walk(self, path: list[PathPoint], checkpoints: list[int]) -> list[int]:
        """Narrow one student checkpoint by checkpoint; the indices it visited, mildest first."""
        p = self.p
        student = self.state.model
        current = full_widths(self.groups)
        walked: list[int] = []
        for index in checkpoints:
            reserve = 1.2 * self._final_seconds() + self._step_seconds()
            if self._time_left() <= 0 or (self.epoch_seconds is not None and self._time_left() < reserve):
                self.stopped_by_time, self.walk_end = True, "the time left was needed for the final distillation"
                break
            started = time.monotonic()
            point = path[index]
            student = narrow(student, self.groups, self.scores, current, point.widths, self.state.model.name)
            current = dict(point.widths)
            student, history = self._distil(student, p.walk_epochs, final=False, label=f"walk-{index}")
            cand = self._judge(index, point, student, "walk", started, history)
            self.kept[index] = (cand, student)
            walked.append(index)
            if self._meets_budget(point, cand):
                self.walk_end = f"reached the {self.cost_unit} budget ({self.cost_budget:.4g})"
                break
            if cand["accuracy_drop"] is None or cand["accuracy_drop"] > self.budget + p.walk_slack:
                self.walk_end = (f"the drop after brief distillation exceeded the budget by more than "
                                 f"{p.walk_slack * 100:g} points")
                break
        else:
            self.walk_end = "reached the narrowest configuration"
        self.ctx.progress(f"channel search: walk ended after {len(walked)} checkpoints: {self.walk_end}")
        return walked

    def _finalise(self, path: list[PathPoint], walked: list[int]) -> tuple[Optional[keras.Model], dict]:
        """Long distillation of the cheapest checkpoint within reach; bisect back toward the original on a miss."""
        slack = self.budget + self.p.walk_slack
        reach = [i for i in walked if self.kept[i][0]["accuracy_drop"] is not None
                 and self.kept[i][0]["accuracy_drop"] <= slack]
        at_budget = [i for i in walked if self._meets_budget(path[i], self.kept[i][0])]
        if at_budget:
            reach = at_budget[:1]  # a hard budget: the mildest checkpoint that meets it, whatever its brief accuracy
        closest: Optional[dict] = None
        lo, hi = -1, len(reach)  # positions in `reach`: hi is known to fail after long distillation
        position = len(reach) - 1
        while 0 <= position < len(reach):
            index = reach[position]
            cand0, student = self.kept[index]
            started = time.monotonic()
            model, history = self._distil(student, self._epochs_that_fit(), final=True, label=f"final-{index}")
            cand = self._judge(index, path[index], model, "final", started, history)
            if cand["verdict"] == "within budget":
                model, cand = self._refine(path, walked, index, model, cand)
                cand["chosen"] = True
                return model, cand
            if cand0["verdict"] == "within budget":  # the longer run measured worse than the brief one
                cand0["chosen"] = True
                cand0["note"] = "kept after brief distillation: the longer run measured worse"
                return student, cand0
            if closest is None or (cand["accuracy_drop"] or 1.0) < (closest["accuracy_drop"] or 1.0):
                closest = cand
            hi = position
            if self._time_left() < 0.5 * self._final_seconds() or hi - lo <= 1:
                break
            position = (lo + hi) // 2
        return None, {"chosen": False, "closest": closest}

    def _refine(self, path: list[PathPoint], walked: list[int], index: int, model: keras.Model,
                cand: dict[str, Any]) -> tuple[keras.Model, dict[str, Any]]:
        """With time left after a pass, bisect forward toward the first walk checkpoint that fell out of reach.

        The long distillation usually recovers more than the walk's slack assumed; the
        distilled winner is narrowed further to the path point halfway to that
        checkpoint and distilled again, for as long as the time budget lasts.
        """
        beyond = [i for i in walked if i > index]
        if not beyond or (self.cost_budget is not None and self._meets_budget(path[index], cand)):
            return model, cand
        lo, hi = index, beyond[0]
        while hi - lo > 1 and self._time_left() > self._final_seconds():  # a whole long distillation still fits
            mid = (lo + hi) // 2
            started = time.monotonic()
            narrowed = narrow(model, self.groups, self.scores, path[lo].widths, path[mid].widths,
                              self.state.model.name)
            trial, history = self._distil(narrowed, self._epochs_that_fit(), final=True, label=f"refine-{mid}")
            result = self._judge(mid, path[mid], trial, "refine", started, history)
            if result["verdict"] == "within budget":
                lo, model, cand = mid, trial, result
            else:
                hi = mid
        return model, cand

    # ------------------------------------------------------------------ report
    def _details(self, model: CostModel, probe: DamageProbe, path: list[PathPoint], final: dict) -> dict[str, Any]:
        before = count_model(self.graph)
        out: dict[str, Any] = {
            "objective": self.objective,
            "budget_points": round(self.budget * 100, 3),
            "cost_model": {"unit": model.unit, "source": model.source, "is_estimate": model.is_estimate,
                           "base": path[0].cost, "terms": model.terms, "coef": model.coef,
                           "fit_error": model.fit_error, "samples": model.samples, "notes": model.notes},
            "channel_multiple": self.multiple,
            "criterion": self.p.criterion,
            "path_length": len(path),
            "candidates": self.candidates,
            "damage_curves": probe.as_dict(),
            "macs_before": int(before.macs),
            "params_before": int(before.params),
            "seconds": round(time.monotonic() - self.started, 1),
            "stopped_by_time_budget": self.stopped_by_time,
            "walk_end": self.walk_end,
            "cost_budget": self.cost_budget,
            "widths_original": describe_widths(self.groups, full_widths(self.groups)),
            "training_data": {"stream": self.fit_stream is not None, "examples": int(self.n_fit),
                              "monitor_examples": n_samples(self.monitor[0]) if self.monitor else 0},
            "data_notes": self.data_notes,
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
                   f"{final['closest']['predicted_cost']:.4g} {model.unit}" if final.get("closest") else "")
            )
        return out


__all__ = ["ChannelSearch"]
