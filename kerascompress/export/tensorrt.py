"""ONNX (with precision in the graph) -> TensorRT engine, or everything needed to build it.

Which TensorRT the engine is for comes from the target profile's ``runtime_version``
(`targets.tensorrt_releases.pick_version`: the installed release when the profile allows
it, else the newest release it allows), and everything follows that version: the oldest
GPU it supports (the gate), and how it is told the precision. TensorRT 10.x/11.x
networks are strongly typed: the engine computes in the precision the ONNX carries (Q/DQ
for INT8/FP8, float16 tensors for FP16). TensorRT 8.x is weakly typed: the build needs
builder precision flags (``--int8``, ``--fp16``) for the precisions the ONNX carries.

When ``tensorrt`` imports, its version is the profile's and this host's GPU is the
target's, `to_tensorrt` builds, times and checks the engine. Otherwise it writes the
ONNX, the reference data (when given), the exact ``trtexec`` command and a
self-contained ``build_engine.py`` for the device, and says why the engine was not built
here. ``tensorrt`` is imported lazily.
"""
from __future__ import annotations

import dataclasses
import inspect
import io
import json
import os
import shlex
from pathlib import Path
from typing import Any, Mapping, Sequence, Union

import numpy as np

from kerascompress.errors import ExportError, UnsupportedOnTarget
from kerascompress.export.onnx import (
    _as_list,
    _calibration_batches,
    _keras_outputs,
    sample_inputs,
)
from kerascompress.export.onnx_precision import describe_precision
from kerascompress.fileio import write_atomic, write_text_atomic
from kerascompress.runtime.tensorrt_engine import (
    trt_build_engine,
    trt_device_memory,
    trt_run_engine,
    trt_time_batches,
)
from kerascompress.targets.nvidia import local_compute_capability
from kerascompress.targets.target import Kernel, Target
from kerascompress.targets.tensorrt_releases import ReleaseLine, pick_version, release_line

#: Minimum compute capability for each precision on NVIDIA GPUs. fp16: CUDA C++
#: Programming Guide, arithmetic instruction throughput (FP16 from 5.3); int8: dp4a from
#: 6.1 (TensorRT 8.6.1 Support Matrix, Hardware and Precision: 6.1 P4 INT8 'Yes',
#: https://docs.nvidia.com/deeplearning/tensorrt/archives/tensorrt-861/support-matrix/index.html);
#: bf16 8.0 and fp8 8.9: Transformer Engine support matrix
#: (https://nvidia.github.io/TransformerEngine/support_matrix.html); int4 (weight-only in
#: TensorRT): no TensorRT matrix row found; the TensorRT-RTX matrix lists INT4 WoQ GEMM as
#: 'No' on 7.5 and 'Yes' from 8.6 (https://docs.nvidia.com/deeplearning/tensorrt-rtx/latest/getting-started/support-matrix.html),
#: so 8.0 here is a conservative, unverified floor.
MIN_COMPUTE_CAPABILITY = {
    "fp32": 0.0,
    "fp16": 5.3,
    "int8": 6.1,
    "bf16": 8.0,
    "fp8": 8.9,
    "int4": 8.0,
}
#: 2:4 structured sparsity needs sparse tensor cores (Ampere, compute capability 8.0+;
#: https://developer.nvidia.com/blog/accelerating-inference-with-sparsity-using-ampere-and-tensorrt/).
MIN_COMPUTE_CAPABILITY_SPARSE = 8.0
#: Weakly typed (8.x) builds: the builder flag (and trtexec option) that allows each precision.
WEAK_TYPING_FLAGS = {"fp16": "FP16", "int8": "INT8", "fp8": "FP8"}

DEFAULT_BATCH_SIZES = (1, 8, 32)


@dataclasses.dataclass
class TensorRTResult:
    """What `to_tensorrt` built or prepared.

    ``status`` is "built" or "engine not built here: <reason>". Latencies are keyed by
    batch size (milliseconds per batch); they exist only when the engine was built here.
    """

    status: str
    onnx_path: Path
    engine_path: Path | None
    trtexec_command: str
    tensorrt_version: str
    script_path: Path | None
    precisions: tuple[str, ...]
    sparsity: bool
    files: dict[str, Path] = dataclasses.field(default_factory=dict)
    latency_ms: dict[int, dict[str, float]] = dataclasses.field(default_factory=dict)
    throughput_per_s: dict[int, float] = dataclasses.field(default_factory=dict)
    max_abs_error: float | None = None
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def built(self) -> bool:
        return self.status == "built"


# ----------------------------------------------------------------------------- gate


def installed_tensorrt_version() -> str | None:
    """Version of the importable ``tensorrt`` package, None when it does not import."""
    try:
        import tensorrt as trt  # type: ignore[import-not-found]
    except Exception:
        return None
    return str(getattr(trt, "__version__", "")) or None


def trt_major_version() -> int | None:
    """Major version of the importable ``tensorrt`` package, None when it does not import."""
    version = installed_tensorrt_version()
    try:
        return int(version.split(".")[0]) if version else None
    except ValueError:  # pragma: no cover
        return None


def kit_version(target: Target, installed: str | None = None) -> str:
    """The TensorRT version an engine for ``target`` is built with (`pick_version` on its runtime_version)."""
    return pick_version(target.runtime_version, installed=installed)


def check_target(
    target: Target,
    precisions: Sequence[str] = ("fp32",),
    sparsity: bool = False,
    trt_version: str | None = None,
) -> list[str]:
    """Reasons why ``target`` cannot run an engine with these precisions ([] = it can).

    ``trt_version`` (default: `kit_version` of the target) sets the oldest GPU and the
    precisions the builder takes; FP8 needs compute capability 8.9+, BF16 and 2:4
    sparsity 8.0+, and INT8 and FP16 both the generation and the profile's kernels.
    """
    reasons: list[str] = []
    if target.runtime != "tensorrt" or target.device != "gpu":
        reasons.append(
            f"target {target.name!r} runs {target.runtime} on {target.device}, not TensorRT on a GPU; "
            "use kc.export.to_tflite for it, or pick a TensorRT profile"
        )
        return reasons
    cc = target.compute_capability
    if cc is None:
        reasons.append(f"target {target.name!r} has no compute_capability; add it to the profile")
        return reasons
    version = trt_version or kit_version(target)
    line: ReleaseLine | None = release_line(version)
    if line is None:
        reasons.append(f"kerascompress knows no TensorRT release line for version {version}")
        return reasons
    if cc < line.min_compute_capability:
        reasons.append(
            f"TensorRT {version} supports GPUs of compute capability {line.min_compute_capability}+; {target.name} "
            f"is {cc} (set the profile's runtime_version to a release that supports it)"
        )
    for p in precisions:
        need = MIN_COMPUTE_CAPABILITY.get(p)
        if need is None:
            reasons.append(f"precision {p!r} is not one TensorRT engines take from ONNX")
            continue
        if p != "fp32" and p not in line.precisions:
            reasons.append(f"TensorRT {version} does not build {p}")
        elif cc < need:
            reasons.append(f"{p} needs compute capability {need}+; {target.name} is {cc}")
        elif p != "fp32" and target.kernel(p) is Kernel.NONE:
            reasons.append(f"the {target.name} profile lists no {p} kernels")
    if sparsity:
        if cc < MIN_COMPUTE_CAPABILITY_SPARSE:
            reasons.append(
                f"2:4 sparsity needs sparse tensor cores (compute capability "
                f"{MIN_COMPUTE_CAPABILITY_SPARSE}+); {target.name} is {cc}"
            )
        elif not target.supports("sparse_2_4"):
            reasons.append(f"the {target.name} profile does not list 2:4 sparse kernels")
    return reasons


def builder_flags(trt_version: str, precisions: Sequence[str]) -> tuple[str, ...]:
    """Builder precision flags a weakly typed (8.x) build needs for ``precisions``; () when strongly typed."""
    line = release_line(trt_version)
    if line is None or line.strongly_typed:
        return ()
    return tuple(WEAK_TYPING_FLAGS[p] for p in ("int8", "fp16", "fp8") if p in precisions and p in WEAK_TYPING_FLAGS)


def storage_only_notes(target: Target, precisions: Sequence[str]) -> list[str]:
    """Precisions the target stores compactly but computes wider: size gains only."""
    return [
        f"{p} on {target.name} is storage-only (computed in a wider format): expect smaller "
        "weights, not lower latency"
        for p in precisions
        if p != "fp32" and target.kernel(p) is Kernel.STORAGE
    ]


# ----------------------------------------------------------------------------- device script
# The engine functions live in `kerascompress.runtime.tensorrt_engine`; the generated
# build_engine.py carries copies of them (by `inspect.getsource`) plus this main().


_SCRIPT_MAIN = '''

def main():
    import argparse
    import json

    import numpy as np

    here = os.path.dirname(os.path.abspath(__file__))
    cfg = json.load(open(os.path.join(here, "build_config.json")))
    ap = argparse.ArgumentParser(description="Build, time and check the TensorRT engine on this device.")
    ap.add_argument("--onnx", default=os.path.join(here, cfg["onnx"]))
    ap.add_argument("--engine", default=os.path.join(here, cfg["engine"]))
    ap.add_argument("--runs", type=int, default=50)
    args = ap.parse_args()
    shapes = {k: [tuple(s) for s in v] for k, v in cfg["shapes"].items()}
    trt_build_engine(args.onnx, args.engine, shapes, sparsity=cfg["sparsity"],
                     strongly_typed=cfg["strongly_typed"], builder_flags=cfg["builder_flags"])
    report = {"engine": args.engine, "tensorrt_version_of_the_kit": cfg["tensorrt_version"]}
    if cfg.get("reference"):
        ref = np.load(os.path.join(here, cfg["reference"]))
        inputs = {n: ref["input:" + n] for n in cfg["inputs"]}
    else:  # no reference data was written: time on zeros at the optimum shape, no fidelity check
        inputs = {n: np.zeros(shapes[n][1], np.float32) for n in cfg["inputs"]}
    if cfg.get("reference") and cfg["outputs"]:
        outputs, _ = trt_run_engine(args.engine, inputs, runs=1, warmup=1)
        report["max_abs_error_vs_keras"] = {n: float(np.abs(outputs[n] - ref["output:" + n]).max()) for n in cfg["outputs"]}
    report["latency"] = trt_time_batches(args.engine, inputs, cfg["batch_sizes"], runs=args.runs)
    print(json.dumps(report, indent=2))
    with open(os.path.join(here, "engine_report.json"), "w") as f:
        json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
'''


def engine_script_source() -> str:
    """Source of the self-contained build_engine.py written next to the ONNX."""
    parts = [
        '"""Build, time and check a TensorRT engine from model.onnx (written by kerascompress).\n\n'
        "Needs: numpy, tensorrt (the version in build_config.json) and torch or cuda-python for device memory.\n"
        'Run on the target device: python build_engine.py\n"""\n'
        "import os\n",
    ]
    for fn in (trt_device_memory, trt_build_engine, trt_run_engine, trt_time_batches):
        parts.append("\n\n" + inspect.getsource(fn))
    parts.append(_SCRIPT_MAIN)
    return "".join(parts)


# ----------------------------------------------------------------------------- helpers


def _npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _graph_inputs(onnx_path: Path) -> tuple[list[tuple[str, list[Any]]], list[str]]:
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    init = {i.name for i in model.graph.initializer}
    ins = []
    for i in model.graph.input:
        if i.name in init:
            continue
        dims = [d.dim_value if d.HasField("dim_value") else None for d in i.type.tensor_type.shape.dim]
        ins.append((i.name, dims))
    return ins, [o.name for o in model.graph.output]


def _shape_profiles(inputs: list[tuple[str, list[Any]]], batch_sizes: Sequence[int]) -> dict[str, list[list[int]]]:
    lo, hi = min(batch_sizes), max(batch_sizes)
    opt = sorted(batch_sizes)[len(batch_sizes) // 2]
    profiles = {}
    for name, dims in inputs:
        if any(d is None for d in dims[1:]):
            raise ExportError(f"input {name!r} has unknown non-batch dimensions {dims}; export with fixed shapes")
        rest = [int(d) for d in dims[1:]]
        if dims and dims[0] is None:
            profiles[name] = [[lo] + rest, [opt] + rest, [hi] + rest]
        else:
            fixed = [int(d) for d in dims]
            profiles[name] = [fixed, fixed, fixed]
    return profiles


def trtexec_command(
    onnx_path: Union[str, os.PathLike],
    engine_path: Union[str, os.PathLike],
    shapes: Mapping[str, Sequence[Sequence[int]]],
    sparsity: bool = False,
    trt_version: str = "11.5.0",
    precisions: Sequence[str] = ("fp32",),
) -> str:
    """The trtexec line that builds (and times) the same engine on the device, for ``trt_version``.

    10.x and 11.x: ``--stronglyTyped`` (first in 10.0; a documented no-op in 11.x, where
    strong typing is the only mode). 8.x has no ``--stronglyTyped`` (trtexec stops on an
    unknown option) and needs the precision flags of the ONNX's precisions instead
    (samples/common/sampleOptions.cpp at tags v8.6.1, v10.0.1, v11.0,
    https://github.com/NVIDIA/TensorRT).
    """

    def fmt(i: int) -> str:
        return ",".join(f"{n}:{'x'.join(str(d) for d in s[i])}" for n, s in shapes.items())

    parts = ["trtexec", f"--onnx={onnx_path}", f"--saveEngine={engine_path}"]
    line = release_line(trt_version)
    if line is not None and not line.strongly_typed:
        parts += [f"--{flag.lower()}" for flag in builder_flags(trt_version, precisions)]
    else:
        parts.append("--stronglyTyped")
    if any(s[0] != s[2] for s in shapes.values()):
        parts += [f"--minShapes={fmt(0)}", f"--optShapes={fmt(1)}", f"--maxShapes={fmt(2)}"]
    if sparsity:
        parts.append("--sparsity=enable")
    return " ".join(shlex.quote(p) for p in parts)


def _local_gpu_compute_capability() -> float | None:
    """Compute capability of this host's first NVIDIA GPU (nvidia-smi or NVML), None when there is none."""
    return local_compute_capability()


def _why_not_here(target: Target, version: str) -> str | None:
    """None when an engine for ``target`` with TensorRT ``version`` can be built and timed on this host."""
    try:
        import tensorrt  # noqa: F401  # type: ignore[import-not-found]
    except Exception as err:
        kind = "is not installed" if isinstance(err, ModuleNotFoundError) else f"does not import ({err})"
        return f"tensorrt {kind}"
    installed = installed_tensorrt_version()
    if installed != version:
        return (
            f"the installed TensorRT {installed} is not the {version} this kit is for (profile runtime_version "
            f"{target.runtime_version or 'any'!r})"
        )
    cc = _local_gpu_compute_capability()
    if cc is None:
        return "no NVIDIA GPU on this host"
    if target.compute_capability is not None and abs(cc - target.compute_capability) > 1e-6:
        return (
            f"this host's GPU is compute capability {cc}, the target is {target.compute_capability}; "
            "engines are specific to the GPU they are built on"
        )
    return None


def engine_summary(result: TensorRTResult) -> str:
    """One report line for a built engine: its error against Keras and its latency per batch size."""
    error = "not checked" if result.max_abs_error is None else f"{result.max_abs_error:.3g}"
    timing = ", ".join(
        f"batch {b}: {t['median_ms']:.3f} ms median, {t['p90_ms']:.3f} ms p90" for b, t in sorted(result.latency_ms.items())
    )
    return f"TensorRT {result.tensorrt_version} engine built and timed here: max abs error vs Keras {error}; {timing}"


# ----------------------------------------------------------------------------- public API


def to_tensorrt(
    onnx_path: Union[str, os.PathLike],
    target: Target,
    out_dir: Union[str, os.PathLike],
    sparsity: bool = False,
    reference_model: Any = None,
    sample_data: Any = None,
    calibration_data: Any = None,
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    runs: int = 50,
) -> TensorRTResult:
    """Build and time a TensorRT engine for ``target`` from an ONNX file, or prepare it.

    The precisions come from the graph (`describe_precision`), so the gate sees exactly
    what the engine will compute, and the TensorRT version from the target's
    ``runtime_version`` (`kit_version`). Raises `UnsupportedOnTarget` with every reason
    when the target cannot run it. ``reference_model`` (Keras) and ``sample_data`` give
    the fidelity check: its outputs are saved with the inputs so the device script can
    compare too; without them no reference.npz is written and the script times zeros.
    ``calibration_data`` is saved only for the record: the Q/DQ scales are already in
    the ONNX, TensorRT needs no calibration cache.
    """
    import onnx

    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise ExportError(f"ONNX file {onnx_path} does not exist; export it first with kc.export.to_onnx")
    if not batch_sizes or any(int(b) < 1 for b in batch_sizes):
        raise ExportError(f"batch_sizes must be positive integers, got {batch_sizes}")
    summary = describe_precision(onnx.load(str(onnx_path)))
    precisions = summary.precisions or ("fp32",)
    version = kit_version(target, installed=installed_tensorrt_version()) if target.runtime == "tensorrt" else ""
    reasons = check_target(target, precisions, sparsity=sparsity, trt_version=version or None)
    if reasons:
        raise UnsupportedOnTarget(f"cannot build a TensorRT engine for {target.name}: " + "; ".join(reasons))
    line = release_line(version)
    strongly_typed = bool(line is not None and line.strongly_typed)
    flags = builder_flags(version, precisions)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    onnx_out = out / "model.onnx"
    if onnx_path.resolve() != onnx_out.resolve():
        write_atomic(onnx_out, onnx_path.read_bytes())
    engine_out = out / "model.engine"
    inputs, output_names = _graph_inputs(onnx_out)
    shapes = _shape_profiles(inputs, batch_sizes)
    files: dict[str, Path] = {"onnx": onnx_out}
    notes = storage_only_notes(target, precisions)
    notes.append(
        f"built for TensorRT {version} ("
        + ("strongly typed: the ONNX's types are the engine's" if strongly_typed
           else f"weakly typed: builder flags {', '.join(flags)} allow the ONNX's precisions" if flags
           else "weakly typed: the ONNX is float32, no builder precision flag needed")
        + f"; profile runtime_version {target.runtime_version or 'any'!r})"
    )
    if line is not None and not line.verified:
        notes.append(f"TensorRT {line.first}-{line.last}: GPU floor {line.min_compute_capability} not verified in NVIDIA's support matrix")

    # Reference data: inputs and Keras outputs, so the device can check fidelity too.
    reference = None
    if reference_model is not None or sample_data is not None:
        names = [n for n, _ in inputs]
        xs = _as_list(sample_data, names) if sample_data is not None else sample_inputs(reference_model)
        arrays = {f"input:{n}": np.asarray(a, dtype=np.float32) for n, a in zip(names, xs)}
        if reference_model is not None:
            ref = _keras_outputs(reference_model, [np.asarray(a) for a in xs])
            arrays.update({f"output:{n}": r for n, r in zip(output_names, ref)})
        reference = arrays
        write_atomic(out / "reference.npz", _npz_bytes(arrays))
        files["reference"] = out / "reference.npz"
    if calibration_data is not None:
        batches = _calibration_batches(reference_model, calibration_data) if reference_model is not None else None
        if batches:
            cal = {f"input:{n}": np.concatenate([b[i] for b in batches]) for i, (n, _) in enumerate(inputs)}
            write_atomic(out / "calibration.npz", _npz_bytes(cal))
            files["calibration"] = out / "calibration.npz"
    notes.append(
        "no calibration cache needed: INT8/FP8 scales are Q/DQ nodes in the ONNX"
        if "int8" in precisions or "fp8" in precisions
        else "no calibration needed"
    )

    command = trtexec_command(onnx_out.name, engine_out.name, shapes, sparsity=sparsity, trt_version=version,
                              precisions=precisions)
    write_text_atomic(out / "trtexec.sh", "#!/bin/sh\n# Run in this folder on the target device.\n" + command + "\n")
    files["trtexec"] = out / "trtexec.sh"
    script = out / "build_engine.py"
    write_text_atomic(script, engine_script_source())
    files["script"] = script
    config = {
        "onnx": onnx_out.name,
        "engine": engine_out.name,
        "shapes": shapes,
        "sparsity": bool(sparsity),
        "batch_sizes": [int(b) for b in batch_sizes],
        "inputs": [n for n, _ in inputs],
        "outputs": output_names if reference is not None and reference_model is not None else [],
        "reference": "reference.npz" if reference is not None else None,
        "target": target.name,
        "precisions": list(precisions),
        "tensorrt_version": version,
        "strongly_typed": strongly_typed,
        "builder_flags": list(flags),
    }
    write_text_atomic(out / "build_config.json", json.dumps(config, indent=2, default=str))
    files["config"] = out / "build_config.json"

    result = TensorRTResult(
        status="",
        onnx_path=onnx_out,
        engine_path=None,
        trtexec_command=command,
        tensorrt_version=version,
        script_path=script,
        precisions=tuple(precisions),
        sparsity=bool(sparsity),
        files=files,
        notes=notes,
    )
    why = _why_not_here(target, version)
    if why is not None:
        result.status = f"engine not built here: {why}"
        return result

    try:
        trt_build_engine(str(onnx_out), str(engine_out), shapes, sparsity=sparsity,
                         strongly_typed=strongly_typed, builder_flags=flags)
    except Exception as err:
        raise ExportError(f"TensorRT engine build failed: {err}") from err
    result.engine_path = engine_out
    files["engine"] = engine_out
    if reference is not None:
        sample = {n: reference[f"input:{n}"] for n, _ in inputs}
        outs, _ = trt_run_engine(str(engine_out), sample, runs=1, warmup=1)
        if reference_model is not None:
            result.max_abs_error = float(max(np.abs(outs[n] - reference[f"output:{n}"]).max() for n in output_names))
    else:
        sample = {n: np.zeros([1] + list(s[0][1:]), np.float32) for n, s in shapes.items()}
    timing = trt_time_batches(str(engine_out), sample, batch_sizes, runs=runs)
    result.latency_ms = {b: {"median_ms": t["median_ms"], "p90_ms": t["p90_ms"]} for b, t in timing.items()}
    result.throughput_per_s = {b: t["throughput_per_s"] for b, t in timing.items()}
    result.status = "built"
    return result


__all__ = [
    "MIN_COMPUTE_CAPABILITY",
    "builder_flags",
    "engine_summary",
    "installed_tensorrt_version",
    "kit_version",
    "MIN_COMPUTE_CAPABILITY_SPARSE",
    "TensorRTResult",
    "check_target",
    "engine_script_source",
    "storage_only_notes",
    "to_tensorrt",
    "trt_major_version",
    "trtexec_command",
]
