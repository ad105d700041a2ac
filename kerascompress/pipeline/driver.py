"""`optimize`: the pipeline driver.

For each pass of the recipe: ask the target (gate), run the pass on a copy, export the
result for the target's runtime, measure it (size, latency interleaved with the state
before it, accuracy or fidelity), and keep it only if it honours the constraints and
is not slower. Everything is recorded in the report.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from kerascompress import targets as targets_lib
from kerascompress.data.bundle import DataBundle, check_inputs, make_bundle
from kerascompress.data.samples import take
from kerascompress.errors import (
    KerasCompressError,
    UnsupportedModelError,
    UnsupportedOnTarget,
)
from kerascompress.models.copy import copy_model
from kerascompress.models.io import check_supported, load_model, weights_digest
from kerascompress.models.kinds import is_tf_keras_model
from kerascompress.passes.base import Gate, ModelState, Pass, PassContext
from kerascompress.pipeline.artifacts import (
    Artifact,
    artifact_kind,
    build_artifact,
    keras_predict,
)
from kerascompress.pipeline.recipes import load_recipe
from kerascompress.pipeline.report import Metrics, Report, StepRecord
from kerascompress.pipeline.types import Constraints, OptimizeResult
from kerascompress.targets.target import Target


def _printer(verbose: bool) -> Callable[[str], None]:
    start = time.monotonic()

    def progress(message: str) -> None:
        if verbose:
            print(f"[kerascompress {time.monotonic() - start:6.1f}s] {message}", file=sys.stderr, flush=True)

    return progress


class Measurer:
    """Exports model states for the target and measures them against the original."""

    def __init__(
        self,
        original: Any,
        target: Target,
        bundle: Optional[DataBundle],
        eval_samples: int,
        latency_runs: int,
        progress: Callable[[str], None],
        seed: int = 0,
    ) -> None:
        self.target = target
        self.latency_runs = latency_runs
        self.progress = progress
        self.measures_latency = target.runs_here()
        if bundle is not None:
            self.x_eval = take(bundle.x_eval, eval_samples)
            self.y_eval = None if bundle.y_eval is None else bundle.y_eval[:eval_samples]
            self.calibration = bundle.calibration()
        else:
            self.x_eval = _random_inputs(original, 64, seed)
            self.y_eval = None
            self.calibration = None
        self.reference = keras_predict(original, self.x_eval)

    def build(self, state: ModelState) -> Artifact:
        return build_artifact(state, self.target, self.calibration)

    def measure(self, state: ModelState, artifact: Artifact) -> Metrics:
        from kerascompress.metrics.fidelity import compare_outputs

        params, macs = _count(state.model)
        outputs = artifact.runner().predict(self.x_eval)
        fid = compare_outputs(self.reference, outputs, labels=self.y_eval)
        return Metrics(
            params=params,
            macs=macs,
            precision=artifact.precision,
            size_bytes=artifact.size_bytes,
            gzip_bytes=artifact.gzip_bytes,
            accuracy=None if fid.accuracy is None else float(fid.accuracy),
            top1_agreement=None if fid.top1_agreement is None else float(fid.top1_agreement),
            max_abs_error=float(fid.max_abs_error),
            runtime="litert" if artifact.kind == "tflite" else "onnxruntime (numerics of the TensorRT ONNX)",
        )

    def time(self, artifacts: dict[str, Artifact]) -> dict[str, Any]:
        """Latency stats per artifact, timed interleaved in one run; {} when not timed here."""
        if not self.measures_latency:
            return {}
        kinds = {a.kind for a in artifacts.values()}
        if kinds != {"tflite"}:
            return {}
        from kerascompress.runtime.timing import compare_latency

        return compare_latency(
            {k: a.data for k, a in artifacts.items()}, runs=self.latency_runs, warmup=max(3, self.latency_runs // 10)
        )


def _count(model: Any) -> tuple[int, Optional[int]]:
    """(parameters, MACs); MACs are None where they cannot be counted (some tf_keras models)."""
    if is_tf_keras_model(model):
        from kerascompress.models.tf_keras import count_tf_keras

        return count_tf_keras(model)
    from kerascompress.graph.counting import count_model

    cost = count_model(model)
    return int(cost.params), int(cost.macs)


def _random_inputs(model: Any, n: int, seed: int) -> Any:
    rng = np.random.default_rng(seed)
    arrays = []
    for tensor in model.inputs:
        shape = tuple(d if d is not None else 1 for d in tensor.shape[1:])
        arrays.append(rng.standard_normal((n,) + shape).astype(np.float32))
    return arrays[0] if len(arrays) == 1 else arrays


def _verdict(
    before: Metrics, after: Metrics, baseline: Metrics, ratio: Optional[float], gate: Gate, constraints: Constraints
) -> Optional[str]:
    """Why a pass must be rolled back, or None when it may stay."""
    budget = constraints.max_accuracy_drop
    if baseline.accuracy is not None and after.accuracy is not None:
        drop = baseline.accuracy - after.accuracy
        if drop > budget:
            return (
                f"accuracy {after.accuracy:.4f} is {drop * 100:.2f} points below the float32 baseline "
                f"{baseline.accuracy:.4f}; the budget is {budget * 100:.2f} points"
            )
    elif after.top1_agreement is not None and 1 - after.top1_agreement > budget:
        return (
            f"top-1 agreement with the original fell to {after.top1_agreement:.4f} "
            f"(budget: {budget * 100:.2f} points of disagreement)"
        )
    if ratio is not None and ratio > constraints.max_slowdown:
        return f"{ratio:.2f}x the latency before it, i.e. slower (tolerance {constraints.max_slowdown:.2f}x)"
    if (
        "size" in gate.benefit
        and before.size_bytes is not None
        and after.size_bytes is not None
        and after.size_bytes > before.size_bytes * 1.01  # a few bytes of serialisation noise are not growth
    ):
        return f"the artifact grew from {before.size_bytes:,} to {after.size_bytes:,} bytes"
    if (
        gate.benefit == "compressed-size"
        and before.gzip_bytes is not None
        and after.gzip_bytes is not None
        and after.gzip_bytes >= before.gzip_bytes
    ):
        return (
            f"it was to buy compressed size only, but the gzip size went from {before.gzip_bytes:,} to "
            f"{after.gzip_bytes:,} bytes"
        )
    return None


def optimize(
    model: Any,
    target: Any = "auto",
    data: Any = None,
    recipe: str | Path | Sequence[Pass] = "default",
    constraints: Optional[Constraints] = None,
    output_dir: Optional[str | Path] = None,
    strict: bool = False,
    verbose: bool = True,
    latency_runs: int = 50,
    eval_samples: int = 1000,
    seed: int = 0,
) -> OptimizeResult:
    """Compress ``model`` for ``target``; see docs/usage.md for the full contract.

    ``model``: a Functional/Sequential keras.Model or a .keras/.h5 path (never modified).
    ``target``: "auto", a profile name, a YAML path or a `Target`.
    ``data``: (x, y) arrays, x alone, a tf.data.Dataset, or a `DataBundle`; used for
    calibration, fine-tuning and held-out evaluation (a held-out part is never trained on).
    ``recipe``: a recipe name, a YAML path, or a list of pass objects.
    ``strict``: raise `UnsupportedOnTarget` instead of skipping a pass the target cannot use.
    """
    progress = _printer(verbose)
    original = load_model(model)
    check_supported(original)
    digest = weights_digest(original)
    tgt = targets_lib.resolve(target)
    constraints = constraints or Constraints()
    pass_list = load_recipe(recipe)
    bundle = make_bundle(data, seed=seed) if data is not None else None
    if bundle is not None:
        check_inputs(bundle.x_eval, [tuple(t.shape) for t in original.inputs])

    progress(f"target {tgt.name} ({tgt.runtime}, {tgt.device}, {tgt.arch}); recipe: {[p.name for p in pass_list]}")
    measurer = Measurer(original, tgt, bundle, eval_samples, latency_runs, progress, seed)
    state = ModelState(copy_model(original))
    progress("exporting and measuring the float32 baseline")
    baseline_artifact = measurer.build(state)
    baseline = measurer.measure(state, baseline_artifact)
    timing = measurer.time({"baseline": baseline_artifact})
    if timing:
        baseline.latency_ms, baseline.latency_p90_ms = timing["baseline"].median_ms, timing["baseline"].p90_ms

    report = Report(
        model_name=original.name,
        target=tgt.to_dict(),
        constraints=dataclasses.asdict(constraints),
        baseline=baseline,
    )
    if bundle is None:
        report.notes.append(
            "no data given: fidelity is measured on random inputs and passes that need data (int8 calibration, "
            "fine-tuning) are skipped; pass data=(x, y) for accuracy-checked results"
        )
    if is_tf_keras_model(original):
        from kerascompress.models.tf_keras import NOTES

        report.notes.extend(NOTES)
    if not measurer.measures_latency:
        report.notes.append(
            f"latency not measured here: {tgt.name} runs on {tgt.runtime}/{tgt.device}/{tgt.arch}, this host cannot "
            f"stand in for it; measure on the device with `kerascompress validate`"
        )

    ctx = PassContext(target=tgt, data=bundle, teacher=original, progress=progress, seed=seed, constraints=constraints)
    current, current_artifact, current_metrics = state, baseline_artifact, baseline
    for p in pass_list:
        record = _run_pass(p, current, current_artifact, current_metrics, baseline, ctx, measurer, constraints, strict)
        report.steps.append(record.record)
        progress(f"{p.name}: {record.record.status}" + (f" ({record.record.reason})" if record.record.reason else ""))
        if record.record.status == "applied":
            current, current_artifact, current_metrics = record.state, record.artifact, record.record.after

    for p, step in zip(pass_list, report.steps):
        if step.status == "applied" and current_artifact.kind == "tflite" and hasattr(p, "artifact_details"):
            step.details["final_artifact"] = p.artifact_details(current_artifact.data)  # e.g. after a later int8

    final = current_metrics
    timing = measurer.time({"baseline": baseline_artifact, "final": current_artifact})
    if timing:
        final.latency_ms, final.latency_p90_ms = timing["final"].median_ms, timing["final"].p90_ms
        report.final_latency_ratio = timing["final"].median_ms / timing["baseline"].median_ms
    report.final = final
    report.constraints_met = _constraints_met(final, baseline, constraints)

    out = Path(output_dir) if output_dir is not None else Path(tempfile.mkdtemp(prefix="kerascompress-"))
    artifacts = _write_outputs(
        out, current, current_artifact, baseline_artifact, tgt, report, progress, take(measurer.x_eval, 8)
    )
    report.artifacts = {k: (str(v) if v else None) for k, v in artifacts.items()}
    (out / "report.json").write_text(report.to_json())
    (out / "report.md").write_text(report.to_markdown())
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
    if p.tf_keras_unsupported and is_tf_keras_model(state.model):
        if strict:
            raise UnsupportedModelError(f"{p.name}: {p.tf_keras_unsupported}")
        record.benefit, record.reason = "none", p.tf_keras_unsupported
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
        new_artifact = measurer.build(output.state)
        after = measurer.measure(output.state, new_artifact)
    except Exception as exc:  # a failing pass must not take the whole run down; strict mode re-raises
        if strict:
            raise
        record.status, record.reason = "failed", f"{type(exc).__name__}: {exc}"
        record.seconds = time.monotonic() - start
        return _Outcome(record)
    record.details = output.details
    if new_artifact.kind == "tflite" and hasattr(p, "artifact_details"):
        record.details["artifact"] = p.artifact_details(new_artifact.data)
    timing = measurer.time({"before": artifact, "after": new_artifact})
    ratio = None
    if timing:
        ratio = timing["after"].median_ms / timing["before"].median_ms
        after.latency_ms, after.latency_p90_ms = timing["after"].median_ms, timing["after"].p90_ms
    record.after, record.latency_ratio = after, ratio
    why_not = _verdict(before, after, baseline, ratio, gate, constraints)
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


def _constraints_met(final: Metrics, baseline: Metrics, c: Constraints) -> dict[str, bool]:
    met: dict[str, bool] = {}
    if final.accuracy is not None and baseline.accuracy is not None:
        met["max_accuracy_drop"] = baseline.accuracy - final.accuracy <= c.max_accuracy_drop
    if c.max_size_bytes is not None and final.size_bytes is not None:
        met["max_size_bytes"] = final.size_bytes <= c.max_size_bytes
    if c.max_latency_ms is not None and final.latency_ms is not None:
        met["max_latency_ms"] = final.latency_ms <= c.max_latency_ms
    return met


def _write_outputs(
    out: Path,
    state: ModelState,
    final: Artifact,
    baseline: Artifact,
    target: Target,
    report: Report,
    progress: Callable[[str], None],
    sample: Any = None,
) -> dict[str, Optional[Path]]:
    """Write every artifact into ``out`` all-or-nothing: into a scratch folder, then moved."""
    out.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".partial-", dir=out))
    names: dict[str, Optional[str]] = {}
    try:
        if is_tf_keras_model(state.model):
            names.update(_write_tf_keras(state.model, scratch, report))
        else:
            state.model.save(scratch / "model.keras")
            names["keras"] = "model.keras"
        (scratch / f"model{final.suffix}").write_bytes(final.data)
        names[final.kind] = f"model{final.suffix}"
        (scratch / f"baseline_float32{baseline.suffix}").write_bytes(baseline.data)
        names[f"{baseline.kind}_float32"] = f"baseline_float32{baseline.suffix}"
        if artifact_kind(target) == "tflite":
            names["onnx"] = _write_float_onnx(state, scratch, report, progress)
        else:
            names.update(_write_tensorrt(scratch / f"model{final.suffix}", state, target, scratch, report, sample))
        for child in scratch.iterdir():
            os.replace(child, out / child.name)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return {k: (out / v if v else None) for k, v in names.items()}


def _write_tf_keras(model: Any, folder: Path, report: Report) -> dict[str, Optional[str]]:
    """Save a tf_keras model in its own .keras format (a tfmot QAT model needs tfmot's quantize_scope to load)."""
    try:
        model.save(folder / "model.keras")
    except Exception as exc:  # noqa: BLE001 - tfmot wrappers fail to serialise in several ways
        report.notes.append(f"tf_keras model not saved: {type(exc).__name__}: {exc}")
        return {"keras": None}
    return {"keras": "model.keras"}


def _write_float_onnx(state: ModelState, folder: Path, report: Report, progress: Callable[[str], None]) -> Optional[str]:
    if is_tf_keras_model(state.model):
        report.notes.append("ONNX export skipped: kerascompress exports ONNX from Keras 3 models only")
        return None
    try:
        from kerascompress.export.onnx import to_onnx
    except ImportError:
        report.notes.append("ONNX export is not available in this installation")
        return None
    progress("exporting ONNX (float32)")
    try:
        to_onnx(state.model, path=folder / "model.onnx")
    except KerasCompressError as exc:
        report.notes.append(f"ONNX export failed: {exc}")
        return None
    return "model.onnx"


def _write_tensorrt(
    onnx_path: Path, state: ModelState, target: Target, folder: Path, report: Report, sample: Any
) -> dict[str, Optional[str]]:
    """Build the engine where TensorRT and the GPU are here; otherwise write how to build it."""
    from kerascompress.export.tensorrt import to_tensorrt

    sparse = any(s.status == "applied" and s.details.get("pattern") == "2:4" for s in report.steps)
    result = to_tensorrt(
        onnx_path, target=target, out_dir=folder, sparsity=sparse and target.supports("sparse_2_4"),
        reference_model=state.model, sample_data=sample,
    )
    report.notes.append(f"TensorRT: {result.status}")
    if not result.built:
        report.notes.append(f"build it on the device with: {result.trtexec_command}")
    report.notes.extend(f"TensorRT: {n}" for n in result.notes)
    names: dict[str, Optional[str]] = {"tensorrt_engine": Path(result.engine_path).name if result.engine_path else None}
    if result.script_path is not None:
        names["tensorrt_build_script"] = Path(result.script_path).name
    return names
