"""Writing a run's outputs: the Keras model, the target's artifact, the float32 baseline,
ONNX or the TensorRT build kit, all-or-nothing."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Optional

from kerascompress.errors import KerasCompressError
from kerascompress.export.onnx import to_onnx
from kerascompress.export.tensorrt import engine_summary, to_tensorrt
from kerascompress.models.kinds import is_tf_keras_model
from kerascompress.passes.base import ModelState
from kerascompress.pipeline.artifacts import Artifact, artifact_kind
from kerascompress.pipeline.report import Report
from kerascompress.targets.target import Target


def write_outputs(
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
    sparse = any(s.status == "applied" and s.details.get("pattern") == "2:4" for s in report.steps)
    try:  # the run's report and other artifacts must be written even when the engine step cannot be
        result = to_tensorrt(
            onnx_path, target=target, out_dir=folder, sparsity=sparse and target.supports("sparse_2_4"),
            reference_model=state.model, sample_data=sample,
        )
    except Exception as exc:  # noqa: BLE001 - reported, never raised at the end of a run
        report.notes.append(f"TensorRT: no engine and no build kit written ({type(exc).__name__}: {exc}); "
                            f"the ONNX model{onnx_path.suffix} is the deployable artifact")
        return {"tensorrt_engine": None}
    report.notes.append(f"TensorRT: {result.status}")
    if result.built:
        report.notes.append(engine_summary(result))
        if report.final is not None and 1 in result.latency_ms:
            report.final.latency_ms = result.latency_ms[1]["median_ms"]
            report.final.latency_p90_ms = result.latency_ms[1]["p90_ms"]
    else:
        report.notes.append(f"build it on the device with: {result.trtexec_command} (or python build_engine.py)")
    report.notes.extend(f"TensorRT: {n}" for n in result.notes)
    names: dict[str, Optional[str]] = {"tensorrt_engine": Path(result.engine_path).name if result.engine_path else None}
    if result.script_path is not None:
        names["tensorrt_build_script"] = Path(result.script_path).name
    return names
