"""`optimize`: the pipeline driver.

For each pass of the recipe: ask the target (gate), run the pass on a copy, export the
result for the target's runtime, measure it (size, latency interleaved with the state
before it, accuracy or fidelity), and keep it only if it honours the constraints and
is not slower. Everything is recorded in the report. Measuring lives in `measure`, the
rules in `verdicts`, writing files in `outputs`.
"""
from __future__ import annotations

import dataclasses
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from kerascompress import targets as targets_lib
from kerascompress.data.samples import n_samples, take
from kerascompress.errors import (
    KerasCompressError,
    ResumeError,
    UnsupportedModelError,
    UnsupportedOnTarget,
)
from kerascompress.fileio import write_text_atomic
from kerascompress.models.copy import copy_model
from kerascompress.models.io import weights_digest
from kerascompress.models.kinds import is_tf_keras_model
from kerascompress.models.preflight import preflight
from kerascompress.models.tf_keras import NOTES as TF_KERAS_NOTES
from kerascompress.passes.base import ModelState, Pass, PassContext
from kerascompress.pipeline.artifacts import Artifact
from kerascompress.pipeline.checkpoints import RunCheckpoints
from kerascompress.pipeline.measure import Measurer
from kerascompress.pipeline.outputs import write_outputs
from kerascompress.pipeline.plots import write_search_plot
from kerascompress.pipeline.recipes import load_recipe
from kerascompress.pipeline.report import Metrics, Report, StepRecord
from kerascompress.pipeline.target_checks import check_target_fit
from kerascompress.pipeline.types import Constraints, OptimizeResult
from kerascompress.pipeline.verdicts import accuracy_noise_note, constraints_met, verdict
from kerascompress.training import precision, strategies


def _printer(verbose: bool) -> Callable[[str], None]:
    start = time.monotonic()

    def progress(message: str) -> None:
        if verbose:
            print(f"[kerascompress {time.monotonic() - start:6.1f}s] {message}", file=sys.stderr, flush=True)

    return progress


def optimize(
    model: Any,
    target: Any = "auto",
    data: Any = None,
    validation_data: Any = None,
    recipe: str | Path | Sequence[Pass] = "default",
    constraints: Optional[Constraints] = None,
    output_dir: Optional[str | Path] = None,
    strict: bool = False,
    verbose: bool = True,
    latency_runs: int = 50,
    eval_samples: Optional[int] = None,
    seed: int = 0,
    latency_table: Any = None,
    strategy: Any = None,
    resume: bool = False,
    callbacks: Optional[Sequence[Any]] = None,
    mixed_precision: Optional[str] = None,
    checkpoint_every: Optional[int] = None,
) -> OptimizeResult:
    """Compress ``model`` for ``target``; see docs/usage.md for the full contract.

    ``model``: a keras.Model (Functional, Sequential or subclassed) or a .keras/.h5 path (never modified).
    ``target``: "auto", a profile name, a YAML path or a `Target`.
    ``data``: (x, y) arrays, x alone, a tf.data.Dataset, or a `DataBundle`; used for
    calibration, fine-tuning and choosing between candidates.
    ``validation_data``: (x_val, y_val), as in ``keras.Model.fit``: every accuracy verdict
    is judged on all of it (paired against the float32 baseline) and nothing trains or
    calibrates on it. Without it a split of ``data`` is held out, and the report warns
    that the original model may have been trained on those samples.
    ``eval_samples``: judge on the first N validation samples only (default: all).
    ``latency_table``: a JSON file written by ``kerascompress profile`` on the target
    device, used by the search for a target this host cannot stand in for.
    ``recipe``: a recipe name, a YAML path, or a list of pass objects.
    ``strict``: raise `UnsupportedOnTarget` instead of skipping a pass the target cannot use.
    Fine-tuning (docs/distributed.md): ``strategy`` is a `tf.distribute.Strategy` every
    fine-tuning runs under (default: one device); ``callbacks`` are Keras callbacks every
    fine-tuning calls; ``mixed_precision`` is None, "mixed_bfloat16" or "mixed_float16"
    (GPU). With ``output_dir`` fine-tunings checkpoint into ``output_dir/checkpoints/``
    at every epoch end and every ``checkpoint_every`` steps (removed when the run
    completes), and ``resume=True`` continues an interrupted run.
    """
    progress = _printer(verbose)
    tgt = targets_lib.resolve(target)
    constraints = constraints or Constraints()
    pass_list = load_recipe(recipe)
    precision.resolve(mixed_precision, strategies.resolve(strategy))  # refuse a bad strategy or policy up front
    run = {"recipe": [repr(p) for p in pass_list], "seed": seed, "target": tgt.name,
           "constraints": dataclasses.asdict(constraints)}
    checked = preflight(model, data, validation_data, output_dir=output_dir, seed=seed)  # bad input fails here
    original, bundle = checked.model, checked.data
    digest = weights_digest(original)
    checkpoints = RunCheckpoints(output_dir, resume, run)

    progress(f"target {tgt.name} ({tgt.runtime}, {tgt.device}, {tgt.arch}); recipe: {[p.name for p in pass_list]}")
    measurer = Measurer(original, tgt, bundle, eval_samples, latency_runs, progress, seed)
    state = ModelState(copy_model(original))
    progress("exporting and measuring the float32 baseline")
    baseline_artifact = measurer.build(state)
    baseline = measurer.measure(state, baseline_artifact, baseline=True)
    timing = measurer.time({"baseline": baseline_artifact})
    if timing:
        baseline.latency_ms, baseline.latency_p90_ms = timing["baseline"].median_ms, timing["baseline"].p90_ms
        measurer.baseline_latency_ms = baseline.latency_ms

    report = Report(
        model_name=original.name,
        target=tgt.to_dict(),
        constraints=dataclasses.asdict(constraints),
        baseline=baseline,
    )
    report.notes.extend(checked.notes)
    if bundle is None:
        report.notes.append(
            "no data given: fidelity is measured on random inputs and passes that need data (int8 calibration, "
            "fine-tuning) are skipped; pass data=(x, y) for accuracy-checked results"
        )
    elif not bundle.independent_validation:
        report.notes.append(
            f"validation data: {n_samples(bundle.x_eval)} samples split from `data`. If the original model was trained "
            "on them its baseline accuracy is optimistic (memorised) and the accuracy budget judges compression "
            "against it: pass validation_data=(x_val, y_val) that the model never saw for an honest verdict"
        )
    if bundle is not None:
        report.notes.extend(bundle.notes)
    if is_tf_keras_model(original):
        report.notes.extend(TF_KERAS_NOTES)
    if not measurer.measures_latency:
        report.notes.append(
            f"latency not measured here: {tgt.why_not_here()}; measure on the device with `kerascompress validate`"
        )

    ctx = measurer.context(data=bundle, teacher=original, progress=progress, seed=seed, constraints=constraints,
                           latency_table=latency_table, baseline=baseline, strategy=strategy,
                           callbacks=list(callbacks or []), mixed_precision=mixed_precision, resume=resume,
                           checkpoint_every=checkpoint_every)
    current, current_artifact, current_metrics = state, baseline_artifact, baseline
    for i, p in enumerate(pass_list):
        step_ctx = dataclasses.replace(ctx, checkpoint_dir=checkpoints.step_dir(i, p.name))
        record = _run_pass(p, current, current_artifact, current_metrics, baseline, step_ctx, measurer, constraints,
                           strict)
        report.steps.append(record.record)
        progress(f"{p.name}: {record.record.status}" + (f" ({record.record.reason})" if record.record.reason else ""))
        if record.record.status == "applied":
            current, current_artifact, current_metrics = record.state, record.artifact, record.record.after

    for p, step in zip(pass_list, report.steps):
        if step.status == "applied" and p.reports_weight_values and current_artifact.kind == "tflite":
            step.details["final_artifact"] = current_artifact.weight_summary()  # e.g. after a later int8

    final = current_metrics
    timing = measurer.time({"baseline": baseline_artifact, "final": current_artifact})
    if timing:
        final.latency_ms, final.latency_p90_ms = timing["final"].median_ms, timing["final"].p90_ms
        report.final_latency_ratio = timing["final"].median_ms / timing["baseline"].median_ms
    report.final = final
    report.constraints_met = constraints_met(final, baseline, constraints)
    check_target_fit(report, tgt, baseline_artifact, current_artifact)  # memory budgets, op table, toolchain

    out = Path(output_dir) if output_dir is not None else Path(tempfile.mkdtemp(prefix="kerascompress-"))
    artifacts = write_outputs(
        out, current, current_artifact, baseline_artifact, tgt, report, progress, take(measurer.x_eval, 8)
    )
    report.artifacts = {k: (str(v) if v else None) for k, v in artifacts.items()}
    plot = write_search_plot(report, out / "search.png", constraints.latency_budget_ms(baseline.latency_ms),
                             constraints.size_budget_bytes(baseline.size_bytes))
    if plot is not None:
        report.figures["search"] = plot.name
    write_text_atomic(out / "report.json", report.to_json())
    write_text_atomic(out / "report.md", report.to_markdown())
    checkpoints.finish()
    if weights_digest(original) != digest:  # a defect in a pass, never the user's fault
        raise KerasCompressError("internal error: a pass modified the caller's model; please report this")
    progress(f"done; artifacts in {out}")
    return OptimizeResult(model=current.model, artifacts=artifacts, report=report)


class _Outcome:
    def __init__(self, record: StepRecord, state: Optional[ModelState] = None, artifact: Optional[Artifact] = None):
        self.record, self.state, self.artifact = record, state, artifact


def _run_pass(
    p: Pass,
    state: ModelState,
    artifact: Artifact,
    before: Metrics,
    baseline: Metrics,
    ctx: PassContext,
    measurer: Measurer,
    constraints: Constraints,
    strict: bool,
) -> _Outcome:
    start = time.monotonic()
    record = StepRecord(name=p.name, config=_jsonable_config(p), status="skipped", before=before)
    unsupported = p.unsupported_reason(state.model)  # e.g. a graph pass on a subclassed or tf_keras model
    if unsupported:
        if strict:
            raise UnsupportedModelError(f"{p.name}: {unsupported}")
        record.benefit, record.reason = "none", unsupported
        return _Outcome(record)
    gate = p.gate(ctx.target, state)
    record.benefit = gate.benefit
    if not gate.allowed:
        if strict:
            raise UnsupportedOnTarget(f"{p.name}: {gate.reason}")
        record.reason = gate.reason
        return _Outcome(record)
    if p.needs_data and ctx.data is None:
        record.reason = "needs data (calibration or fine-tuning): pass data=(x, y) to optimize()"
        return _Outcome(record)
    if p.needs_labels and (ctx.data is None or not ctx.data.can_train):
        record.reason = "needs labelled training data for fine-tuning: pass data=(x, y) with labels"
        return _Outcome(record)
    ctx.progress(f"{p.name}: running ({gate.reason})" if gate.reason else f"{p.name}: running")
    try:
        output = p.apply(state, ctx)
        if output.state is state:  # nothing to keep: e.g. a search where no candidate kept the budget
            record.details = output.details
            record.reason = str(output.details.get("nothing_passed") or output.details.get("reason")
                                or "the pass left the model unchanged")
            record.seconds = time.monotonic() - start
            return _Outcome(record)
        new_artifact = measurer.build(output.state)
        after = measurer.measure(output.state, new_artifact)
    except ResumeError:  # the run cannot continue as asked: never reported as one failed pass
        raise
    except Exception as exc:  # a failing pass must not take the whole run down; strict mode re-raises
        if strict:
            raise
        record.status, record.reason = "failed", f"{type(exc).__name__}: {exc}"
        record.seconds = time.monotonic() - start
        return _Outcome(record)
    record.details = output.details
    if p.reports_weight_values and new_artifact.kind == "tflite":
        record.details["artifact"] = new_artifact.weight_summary()
    timing = measurer.time({"before": artifact, "after": new_artifact})
    ratio = None
    if timing:
        ratio = timing["after"].median_ms / timing["before"].median_ms
        after.latency_ms, after.latency_p90_ms = timing["after"].median_ms, timing["after"].p90_ms
    record.after, record.latency_ratio = after, ratio
    why_not = verdict(before, after, baseline, ratio, gate, constraints)
    noise = accuracy_noise_note(after, constraints)
    if noise:
        record.details["accuracy_verdict"] = noise
    record.seconds = time.monotonic() - start
    if why_not:
        record.status, record.reason = "rolled back", why_not
        return _Outcome(record)
    record.status, record.reason = "applied", gate.reason
    return _Outcome(record, output.state, new_artifact)


def _jsonable_config(p: Pass) -> dict[str, Any]:
    out = {}
    for k, v in p.config().items():
        out[k] = v if isinstance(v, (int, float, str, bool, type(None), list, tuple, dict)) else repr(v)
    return out


