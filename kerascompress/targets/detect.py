"""Build a `Target` for the machine we are running on (``target="auto"``).

The rules live in pure functions (`parse_cpuinfo`, `cpu_target`, `gpu_target`) so they
can be tested with sample /proc/cpuinfo texts and compute capabilities from machines we
do not have; `detect` only gathers the host's inputs and calls them. Nothing here
imports TensorRT (its wheels can be present yet fail to import) and TensorFlow is only
imported when GPUs are asked about.
"""
from __future__ import annotations

import dataclasses
import importlib.metadata
import importlib.util
import os
import platform
import sys
from pathlib import Path
from typing import Any, Optional

from kerascompress.targets.target import Kernel, Target

_ARCH_ALIASES = {"amd64": "x86_64", "x64": "x86_64", "aarch64": "arm64", "armv8l": "arm64", "arm64": "arm64"}

#: CPU flags that decide a kernel or are worth showing; everything else is noise here.
X86_FEATURES = (
    "sse4_1", "avx", "fma", "f16c", "avx2", "avx_vnni", "avx512f", "avx512bw", "avx512vl",
    "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_int8", "amx_bf16", "amx_fp16",
)
ARM_FEATURES = ("fp", "asimd", "fphp", "asimdhp", "asimddp", "i8mm", "bf16", "sve", "sve2", "sme")

#: A few Arm "CPU part" ids (implementer 0x41) to name the core in descriptions.
ARM_PARTS = {
    "0xd03": "Cortex-A53", "0xd04": "Cortex-A35", "0xd05": "Cortex-A55", "0xd07": "Cortex-A57",
    "0xd08": "Cortex-A72", "0xd09": "Cortex-A73", "0xd0a": "Cortex-A75", "0xd0b": "Cortex-A76",
    "0xd0c": "Neoverse-N1", "0xd0d": "Cortex-A77", "0xd41": "Cortex-A78", "0xd44": "Cortex-X1",
    "0xd46": "Cortex-A510", "0xd47": "Cortex-A710", "0xd48": "Cortex-X2", "0xd40": "Neoverse-V1",
    "0xd49": "Neoverse-N2", "0xd4f": "Neoverse-V2",
}

# Where the rules come from; the same texts as in configs/targets/*.yaml.
_SRC_XNNPACK = "LiteRT runs CPU models through its default XNNPACK delegate (measured with ai-edge-litert 2.3.0)"
_SRC_FP16_CPU = (
    "TFLite float16 quantization guide: on CPU the float16 weights are upsampled to float32 before the first "
    "inference (https://www.tensorflow.org/lite/performance/post_training_float16_quant); measured: FP16 model "
    "no faster than FP32 on x86 without avx512_fp16 (docs/benchmarks.md)"
)
_SRC_FP16_ARM = (
    "TensorFlow blog 'Half-precision Inference Doubles On-Device Inference Performance' (blog.tensorflow.org, "
    "2023): XNNPACK computes FP16 natively only on Arm CPUs with the ARMv8.2 FP16 arithmetic extension"
)
_SRC_16X8 = "measured: 16x8 models ~20x slower than fp32 on x86 LiteRT/XNNPACK, no fast kernels (project measurement)"
_SRC_BF16_LITERT = "the TF->LiteRT converter has no bfloat16 model type; LiteRT CPU models compute in fp32/fp16/int8"
_SRC_NO_SPARSE_CPU = (
    "measured: TFLite EXPERIMENTAL_SPARSITY made the file 7% larger and XNNPACK refused to delegate it; "
    "2:4 + int8 and unstructured pruning gave no speed-up (project measurement)"
)
_SRC_NO_CLUSTER_CPU = "measured: clustered (16 clusters) + int8 gave the smallest gzip but no speed-up on LiteRT (project measurement)"


@dataclasses.dataclass(frozen=True)
class CpuInfo:
    """What /proc/cpuinfo says about the CPU, reduced to what decides kernels."""

    arch: str  # "x86_64", "arm64", or the raw machine name
    model: str  # "AMD EPYC 9R14", "Cortex-A76", "Raspberry Pi 4 Model B Rev 1.1", ...
    flags: frozenset[str]  # features every core has
    cores: int = 0


def normalize_arch(machine: str) -> str:
    """``platform.machine()`` spelling -> our arch names (x86_64, arm64, ...)."""
    m = machine.strip().lower()
    return _ARCH_ALIASES.get(m, m)


def parse_cpuinfo(text: str, machine: Optional[str] = None) -> CpuInfo:
    """Parse the text of /proc/cpuinfo (x86 ``flags`` or Arm ``Features`` lines).

    Flags are intersected over all processors: on big.LITTLE phones a thread may run on
    any core, so only features every core has can be relied on. ``machine`` (e.g.
    ``platform.machine()``) wins over the guess made from the text.
    """
    blocks: list[dict[str, str]] = []
    current: dict[str, str] = {}
    extra: dict[str, str] = {}  # lines after the processor blocks (Arm "Hardware", "Model")
    for line in text.splitlines():
        if not line.strip():
            if current:
                blocks.append(current)
                current = {}
            continue
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key, value = key.strip().lower(), value.strip()
        if key == "processor" and current and "processor" in current:
            blocks.append(current)
            current = {}
        current[key] = value
    if current:
        blocks.append(current)
    cpus = [b for b in blocks if "flags" in b or "features" in b]
    for b in blocks:
        if b not in cpus:
            extra.update(b)

    flag_sets = [frozenset((b.get("flags") or b.get("features") or "").split()) for b in cpus]
    flags = frozenset.intersection(*flag_sets) if flag_sets else frozenset()

    if machine:
        arch = normalize_arch(machine)
    elif any("flags" in b for b in cpus):
        arch = "x86_64"
    elif any("features" in b for b in cpus):
        arch = "arm64" if any(b.get("cpu architecture", "") in ("8", "AArch64") for b in cpus) or "asimd" in flags else "arm"
    else:
        arch = "unknown"

    model = ""
    for b in cpus:
        if b.get("model name"):
            model = b["model name"]
            break
    if not model:
        parts = []
        for b in cpus:
            if b.get("cpu implementer", "").lower() == "0x41":
                name = ARM_PARTS.get(b.get("cpu part", "").lower())
                if name and name not in parts:
                    parts.append(name)
        board = extra.get("model") or next((b["model"] for b in cpus if b.get("model") and not b["model"].isdigit()), "")
        model = " + ".join(parts)
        if board:
            model = f"{board} ({model})" if model else board
    return CpuInfo(arch=arch, model=model, flags=flags, cores=len(cpus))


def cpu_target(info: CpuInfo, source: str = "detected: /proc/cpuinfo flags on this host") -> Target:
    """The LiteRT CPU target a host with ``info`` is, by the rules the shipped profiles follow.

    x86: int8 fast with AVX2 (XNNPACK QS8 kernels), fp16 fast only with avx512_fp16.
    Arm64: int8 fast with NEON (every AArch64 core), fp16 fast only with the ARMv8.2 FP16
    arithmetic extension (``fphp``/``asimdhp``).
    """
    flags = info.flags
    src = {}
    precisions: dict[str, Kernel] = {"fp32": Kernel.FAST}
    src["precisions.fp32"] = _SRC_XNNPACK
    if info.arch == "x86_64":
        isa = tuple(f for f in X86_FEATURES if f in flags)
        fp16_fast = "avx512_fp16" in flags
        int8_fast = bool({"avx2", "avx512_vnni", "avx_vnni"} & flags)
        precisions["fp16"] = Kernel.FAST if fp16_fast else Kernel.STORAGE
        src["precisions.fp16"] = (
            f"{source}: avx512_fp16 present; XNNPACK has AVX512-FP16 kernels (assumed, not measured here)"
            if fp16_fast
            else f"{source}: no avx512_fp16. {_SRC_FP16_CPU}"
        )
        precisions["int8"] = Kernel.FAST if int8_fast else Kernel.STORAGE
        src["precisions.int8"] = (
            f"{source}: {'avx512_vnni' if 'avx512_vnni' in flags else 'avx2'} present; measured: int8 ~3x faster "
            "than fp32 with XNNPACK on an AVX-512 VNNI x86 (docs/benchmarks.md)"
            if int8_fast
            else f"{source}: no AVX2; int8 speed-up not established on this CPU (not measured), treated as size-only"
        )
        if "avx512f" in flags:
            cm, why = 16, "a 512-bit AVX-512 register holds 16 fp32/int32 lanes; XNNPACK AVX-512 GEMM kernels tile 16 output channels"
        elif "avx2" in flags:
            cm, why = 8, "a 256-bit AVX2 register holds 8 fp32/int32 lanes; XNNPACK AVX2 int8 GEMM kernels tile 8 output channels"
        else:
            cm, why = 4, "a 128-bit SSE register holds 4 fp32 lanes"
    elif info.arch == "arm64":
        isa = tuple(f for f in ARM_FEATURES if f in flags)
        fp16_fast = bool({"fphp", "asimdhp"} & flags)
        precisions["fp16"] = Kernel.FAST if fp16_fast else Kernel.STORAGE
        src["precisions.fp16"] = (
            f"{source}: fphp/asimdhp present (ARMv8.2 FP16 arithmetic). {_SRC_FP16_ARM}"
            if fp16_fast
            else f"{source}: no fphp/asimdhp (no FP16 arithmetic). {_SRC_FP16_ARM}; {_SRC_FP16_CPU}"
        )
        precisions["int8"] = Kernel.FAST
        src["precisions.int8"] = (
            f"{source}: NEON (asimd){' with dot product (asimddp)' if 'asimddp' in flags else ''}; XNNPACK has "
            "NEON int8 kernels; LiteRT quantization guide: full-integer models ~3x faster on CPU "
            "(https://ai.google.dev/edge/litert/models/post_training_quantization)"
        )
        if fp16_fast:
            cm, why = 8, "a 128-bit NEON register holds 8 fp16 lanes (the fast float path here)"
        else:
            cm, why = 4, "a 128-bit NEON register holds 4 fp32/int32 lanes"
    else:
        isa = ()
        precisions["int8"] = Kernel.STORAGE
        src["precisions.int8"] = f"{source}: unknown architecture {info.arch!r}; no int8 speed-up assumed"
        cm, why = 1, "unknown architecture: no SIMD width assumed"
    precisions["int16x8"] = Kernel.STORAGE
    src["precisions.int16x8"] = _SRC_16X8
    precisions["bf16"] = Kernel.NONE
    src["precisions.bf16"] = _SRC_BF16_LITERT

    src.update(
        runtime=f"{source}: CPU host without a usable GPU+TensorRT, so models run on LiteRT",
        device=f"{source}: CPU",
        arch=f"{source}: platform.machine()",
        isa_features=f"{source}: kernel-relevant flags",
        channel_multiple=f"{source}: {why}",
        sparse_2_4="no 2:4 sparse kernels in LiteRT/XNNPACK; " + _SRC_NO_SPARSE_CPU,
        unstructured_sparsity=_SRC_NO_SPARSE_CPU,
        clustered_weights=_SRC_NO_CLUSTER_CPU,
        full_integer_only="CPUs run float ops; LiteRT mixes float and int8 layers",
    )
    model = f" ({info.model})" if info.model else ""
    return Target(
        name=f"host-{info.arch}",
        description=f"this host's CPU{model}, LiteRT with XNNPACK",
        runtime="litert",
        device="cpu",
        arch=info.arch,
        precisions=precisions,
        isa_features=isa,
        channel_multiple=cm,
        sources=src,
    )


def gpu_target(
    name: str, compute_capability: tuple[int, int], arch: str = "x86_64", source: str = "detected: TensorFlow GPU device details"
) -> Target:
    """A TensorRT target for an NVIDIA GPU of ``compute_capability`` (major, minor).

    Rules (NVIDIA TensorRT support matrices): dp4a int8 from 6.1, fast fp16 from 7.0
    (and the 2x-fp16 parts 5.3/6.0/6.2), int8 tensor cores from 7.2/7.5, bf16 and 2:4
    sparse tensor cores from 8.0, fp8 from 8.9. TensorRT 10.5+ needs 7.5 or newer.
    """
    major, minor = compute_capability
    cc = major + minor / 10.0
    tag = f"{source}: compute capability {major}.{minor}"
    matrix = "NVIDIA TensorRT Support Matrix, Hardware and Precision (https://docs.nvidia.com/deeplearning/tensorrt/support-matrix)"
    precisions = {"fp32": Kernel.FAST}
    src = {"precisions.fp32": f"{tag}; {matrix}"}
    fp16_fast = cc >= 7.0 or (major, minor) in ((5, 3), (6, 0), (6, 2))
    precisions["fp16"] = Kernel.FAST if fp16_fast else Kernel.STORAGE
    src["precisions.fp16"] = f"{tag}; {matrix}" + (
        "" if fp16_fast else "; CUDA programming guide: fp16 arithmetic at 1/64 of the fp32 rate on cc 6.1"
    )
    precisions["int8"] = Kernel.FAST if cc >= 6.1 else Kernel.NONE
    src["precisions.int8"] = f"{tag}; {matrix} (dp4a from 6.1, int8 tensor cores from 7.5)"
    precisions["bf16"] = Kernel.FAST if cc >= 8.0 else Kernel.NONE
    src["precisions.bf16"] = f"{tag}; BF16 needs compute capability >= 8.0 ({matrix})"
    precisions["fp8"] = Kernel.FAST if cc >= 8.9 else Kernel.NONE
    src["precisions.fp8"] = f"{tag}; FP8 needs compute capability >= 8.9 ({matrix})"
    precisions["int16x8"] = Kernel.NONE
    src["precisions.int16x8"] = "TensorRT has no int16 activation quantization (INT8/FP8/INT4/FP4 only)"
    if cc >= 7.2:
        cm, why = 16, "int8 tensor cores want GEMM dims in multiples of 16 bytes = 16 int8 channels"
    elif cc >= 7.0:
        cm, why = 8, "fp16 tensor cores want GEMM dims in multiples of 16 bytes = 8 fp16 channels"
    else:
        cm, why = 4, "dp4a multiplies 4 packed int8 values"
    notes: tuple[str, ...] = ()
    if cc < 7.0:
        version, note = "<8.7", "TensorRT 8.6 is the last release for this GPU; TensorRT 10.x/11.x need compute capability >= 7.5"
        notes = (note,)
    elif cc < 7.5:
        version, note = "<10.5", "TensorRT 10.5 removed Volta (7.0); use TensorRT <= 10.4"
        notes = (note,)
    else:
        version = ""
    src.update(
        runtime=f"{source}: GPU present and the tensorrt package is installed",
        device=tag,
        arch=f"{source}: platform.machine()",
        compute_capability=tag,
        channel_multiple=f"{tag}: {why} (NVIDIA Matrix Multiplication Background guide, "
        "https://docs.nvidia.com/deeplearning/performance/dl-performance-matrix-multiplication/index.html)",
        sparse_2_4=f"{tag}; 2:4 sparse tensor cores from Ampere (8.0), used by TensorRT 8.0+",
        unstructured_sparsity="TensorRT accelerates only 2:4 structured sparsity",
        clustered_weights="TensorRT computes from dense weights; clustering buys only compressed-file size",
        full_integer_only="TensorRT mixes float and int8 layers",
        runtime_version=f"{tag}; TensorRT 10.5 release notes (Volta removed) and 10.x support matrices (SM 7.0+)",
        notes="TensorRT release notes",
    )
    return Target(
        name=f"host-gpu-sm{major}{minor}",
        description=f"this host's GPU {name} (sm_{major}{minor}) on TensorRT",
        runtime="tensorrt",
        device="gpu",
        arch=arch,
        precisions=precisions,
        compute_capability=cc,
        sparse_2_4=cc >= 8.0,
        channel_multiple=cm,
        runtime_version=version,
        notes=notes,
        sources=src,
    )


def _read_cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def tensorrt_available() -> bool:
    """Whether a ``tensorrt`` package is installed (found, not imported: importing can fail or be slow)."""
    try:
        return importlib.util.find_spec("tensorrt") is not None
    except (ImportError, ValueError):
        return False


def list_gpus() -> list[dict[str, Any]]:
    """GPUs TensorFlow sees: ``[{"name": ..., "compute_capability": (major, minor)}]``."""
    try:
        import tensorflow as tf  # noqa: PLC0415 - heavy; only when asked
    except Exception:  # pragma: no cover - TF is a dependency, but detection must not crash
        return []
    gpus = []
    for dev in tf.config.list_physical_devices("GPU"):
        try:
            details = tf.config.experimental.get_device_details(dev)
        except Exception:  # pragma: no cover - depends on drivers
            details = {}
        cc = details.get("compute_capability")
        gpus.append({"name": details.get("device_name", dev.name), "compute_capability": tuple(cc) if cc else None})
    return gpus


def _host_cpu() -> CpuInfo:
    info = parse_cpuinfo(_read_cpuinfo(), machine=platform.machine())
    if not info.model:
        info = dataclasses.replace(info, model=platform.processor())
    return info


def detect(gpus: bool = True) -> Target:
    """This host as a `Target`: a TensorRT GPU target when a GPU with a known compute
    capability and the tensorrt package are both present, else a LiteRT CPU target.

    ``gpus=False`` skips asking TensorFlow about GPUs (avoids importing it).
    """
    arch = normalize_arch(platform.machine())
    if gpus and tensorrt_available():
        for gpu in list_gpus():
            if gpu["compute_capability"]:
                return gpu_target(gpu["name"], gpu["compute_capability"], arch=arch)
    return cpu_target(_host_cpu())


def _version(dist: str) -> Optional[str]:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def describe_host(gpus: bool = True) -> dict[str, Any]:
    """What the CLI's ``targets`` command shows about this machine (JSON-serialisable)."""
    cpu = _host_cpu()
    gpu_list = list_gpus() if gpus else []
    target = detect(gpus=gpus)
    trt_version = next((v for v in (_version("tensorrt"), _version("tensorrt-cu13"), _version("tensorrt-cu12")) if v), None)
    return {
        "arch": cpu.arch,
        "system": platform.system(),
        "python": sys.version.split()[0],
        "cpu_model": cpu.model,
        "cpu_count": os.cpu_count(),
        "isa_features": sorted(set(cpu.flags) & set(X86_FEATURES + ARM_FEATURES)),
        "gpus": [
            {"name": g["name"], "compute_capability": ".".join(map(str, g["compute_capability"])) if g["compute_capability"] else None}
            for g in gpu_list
        ],
        "tensorrt_installed": tensorrt_available(),
        "tensorrt_version": trt_version,
        "tensorflow_version": _version("tensorflow-cpu") or _version("tensorflow"),
        "ai_edge_litert_version": _version("ai-edge-litert"),
        "target": target.to_dict(),
    }
