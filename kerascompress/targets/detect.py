"""Build a `Target` for the machine we are running on (``target="auto"``).

The rules live in pure functions (`cpu_target`, `gpu_target`) so they can be tested with
sample /proc/cpuinfo texts and compute capabilities from machines we do not have;
`detect` only gathers the host's inputs (`targets.cpuinfo`, `targets.nvidia`) and calls
them. Nothing here imports TensorRT (its wheels can be present yet fail to import) or
TensorFlow.

Every fact a rule states carries a public source or names the measurement file of this
repository it comes from; a claim about *this* host is phrased as a capability of its
ISA features, never as a speed measured on another machine.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import sys
from typing import Any, Optional

from kerascompress.targets.cpuinfo import (  # noqa: F401 - re-exported: detection's input types
    ARM_FEATURES,
    ARM_PARTS,
    X86_FEATURES,
    CpuInfo,
    host_cpu,
    normalize_arch,
    parse_cpuinfo,
)
from kerascompress.targets.nvidia import GpuInfo, list_gpus
from kerascompress.targets.target import Kernel, Target
from kerascompress.targets.tensorrt_releases import newest_line_for, version_specifier_for

# Where the rules come from (the shipped profiles cite the same documents).
XNNPACK_README = "https://github.com/google-ai-edge/LiteRT/blob/main/tflite/delegates/xnnpack/README.md"
XNNPACK_KERNELS = "https://github.com/google/XNNPACK/blob/master/src"
LITERT_MEASURED = "benchmarks/results/litert_kernels.md"
_SRC_XNNPACK = (
    f"LiteRT hands CPU models to its default XNNPACK delegate (XNNPACK delegate README, {XNNPACK_README}); "
    f"measured: the execution plan ends in a DELEGATE node for float32, FP16-weight and int8 models ({LITERT_MEASURED})"
)
_SRC_FP16_NO_ARITH = (
    f"XNNPACK delegate README, 'Floating-Point (IEEE FP16) Operators' ({XNNPACK_README}): native FP16 inference is "
    "'limited to ARM & ARM64 devices with ARMv8.2 FP16 arithmetics extension'; elsewhere FP16 weights are "
    "dequantized and computed in FP32 (LiteRT float16 quantization guide, "
    "https://ai.google.dev/edge/litert/models/post_training_float16_quant)"
)
_SRC_FP16_ARM = (
    f"XNNPACK delegate README, 'Floating-Point (IEEE FP16) Operators' ({XNNPACK_README}): FP16 inference when the "
    "CPU has the ARMv8.2 FP16 arithmetic extension and the model's reduced_precision_support metadata allows it; "
    "kerascompress exports FP16 for such targets with FP16 accumulation requested (fp16accfp16)"
)
_SRC_16X8 = (
    f"XNNPACK delegate README lists FP32, FP16 and 8-bit quantized operators only ({XNNPACK_README}); measured: a "
    f"16x8 model is not delegated to XNNPACK and runs on LiteRT's reference kernels, far slower than float32 ({LITERT_MEASURED})"
)
_SRC_BF16_LITERT = (
    f"the XNNPACK delegate computes FP32, FP16 and 8-bit quantized operators ({XNNPACK_README}); it has no "
    "bfloat16 compute path"
)
_SRC_SPARSE_CPU = (
    f"XNNPACK delegate README, 'Sparse Inference' ({XNNPACK_README}): sparse kernels only for FP32/FP16 CNN "
    "subgraphs whose 1x1 convolutions are at least 2/3 zeros and stored with DENSIFY operators, no N:M (2:4) "
    f"kernels; measured: a 2:4-sparse int8 model runs at plain int8's speed ({LITERT_MEASURED})"
)
_SRC_CLUSTER_CPU = (
    f"XNNPACK computes from dense int8/float weights: its operators take no palettized weights ({XNNPACK_README}); "
    f"measured: a 16-value clustered int8 model runs at plain int8's speed ({LITERT_MEASURED})"
)
_SRC_FULL_INTEGER = (
    f"a LiteRT model may mix float and int8 operators and XNNPACK runs both ({XNNPACK_README}, "
    "'Floating-Point (IEEE FP32) Operators' and 'Quantized Operators')"
)
_SRC_GPU_DETECTED = "detected: nvidia-smi --query-gpu=name,compute_cap (or NVML) on this host"
_CUDA_GPUS = "CUDA GPUs compute capability list (https://developer.nvidia.com/cuda-gpus)"
_TRT_MATRIX = (
    "NVIDIA TensorRT 10.1.0 Support Matrix, section 2 Hardware and Precision "
    "(https://docs.nvidia.com/deeplearning/tensorrt/archives/tensorrt-1010/support-matrix/index.html)"
)
_TE_MATRIX = "Transformer Engine support matrix (https://nvidia.github.io/TransformerEngine/support_matrix.html)"
_CUDA_GUIDE = (
    "CUDA C++ Programming Guide, 'Arithmetic Instructions' throughput table "
    "(https://docs.nvidia.com/cuda/cuda-c-programming-guide/index.html#arithmetic-instructions)"
)
_TRT_QUANT_TYPES = (
    "TensorRT quantized types are INT8, INT4 (weight-only), FP8 and FP4; no int16 activations "
    "(https://docs.nvidia.com/deeplearning/tensorrt/latest/inference-library/work-quantized-types.html)"
)
_SPARSITY_BLOG = (
    "NVIDIA blog 'Accelerating Inference with Sparsity Using the NVIDIA Ampere Architecture and NVIDIA TensorRT' "
    "(https://developer.nvidia.com/blog/accelerating-inference-with-sparsity-using-ampere-and-tensorrt/)"
)
_MATMUL_GUIDE = (
    "NVIDIA Matrix Multiplication Background guide, Tensor Core requirements "
    "(https://docs.nvidia.com/deeplearning/performance/dl-performance-matrix-multiplication/index.html)"
)


def cpu_target(info: CpuInfo, source: str = "detected: /proc/cpuinfo flags on this host") -> Target:
    """The LiteRT CPU target a host with ``info`` is, by the rules the shipped profiles follow.

    x86: int8 fast with AVX2 or VNNI (XNNPACK int8 kernels); FP16 storage-only (XNNPACK
    computes FP16 natively only on Arm). Arm64: int8 fast with NEON (every AArch64 core),
    FP16 fast only with the ARMv8.2 vector FP16 arithmetic extension (``asimdhp``).
    """
    flags = info.flags
    src = {}
    precisions: dict[str, Kernel] = {"fp32": Kernel.FAST}
    src["precisions.fp32"] = _SRC_XNNPACK
    if info.arch == "x86_64":
        isa = tuple(f for f in X86_FEATURES if f in flags)
        precisions["fp16"] = Kernel.STORAGE
        fp16_flag = "avx512_fp16 present, but " if "avx512_fp16" in flags else ""
        src["precisions.fp16"] = f"{source}: {fp16_flag}{_SRC_FP16_NO_ARITH}"
        vnni = next((f for f in ("avx512_vnni", "avx_vnni") if f in flags), None)
        int8_fast = bool(vnni) or "avx2" in flags
        precisions["int8"] = Kernel.FAST if int8_fast else Kernel.STORAGE
        if vnni:
            kernel = "qs8-qc8w-gemm/gen/qs8-qc8w-gemm-1x16c8-minmax-fp32-avx512vnni.c" if vnni == "avx512_vnni" else \
                "qs8-qc8w-gemm/gen/qs8-qc8w-gemm-1x8c8-minmax-fp32-avx256vnni.c"
            src["precisions.int8"] = f"{source}: {vnni} present; XNNPACK ships {vnni} int8 GEMM kernels ({XNNPACK_KERNELS}/{kernel})"
        elif int8_fast:
            src["precisions.int8"] = (
                f"{source}: avx2 present; XNNPACK ships AVX2 int8 GEMM kernels "
                f"({XNNPACK_KERNELS}/qs8-qc8w-gemm/gen/qs8-qc8w-gemm-1x8c8-minmax-fp32-avx2.c)"
            )
        else:
            src["precisions.int8"] = (
                f"{source}: no AVX2 or VNNI; XNNPACK's x86 int8 GEMM kernels below AVX2 "
                "(https://github.com/google/XNNPACK/tree/master/src/qs8-qc8w-gemm/gen) "
                "are SSE, with no int8 speed-up established: treated as size-only"
            )
        if "avx512f" in flags:
            cm, why = 16, f"XNNPACK's AVX-512 GEMM kernels tile 16 output channels ({XNNPACK_KERNELS}/f32-gemm/gen/f32-gemm-1x16-minmax-avx512f-broadcast.c)"
        elif "avx2" in flags:
            cm, why = 8, f"XNNPACK's AVX2 int8 GEMM kernels tile 8 output channels ({XNNPACK_KERNELS}/qs8-qc8w-gemm/gen/qs8-qc8w-gemm-1x8c8-minmax-fp32-avx2.c)"
        else:
            cm, why = 4, "a 128-bit SSE register holds 4 fp32 lanes (Intel SDM, https://www.intel.com/content/www/us/en/developer/articles/technical/intel-sdm.html)"
    elif info.arch == "arm64":
        isa = tuple(f for f in ARM_FEATURES if f in flags)
        fp16_fast = "asimdhp" in flags
        precisions["fp16"] = Kernel.FAST if fp16_fast else Kernel.STORAGE
        src["precisions.fp16"] = (
            f"{source}: asimdhp present (ARMv8.2 vector FP16 arithmetic, https://docs.kernel.org/arch/arm64/elf_hwcaps.html). {_SRC_FP16_ARM}"
            if fp16_fast
            else f"{source}: no asimdhp (no vector FP16 arithmetic). {_SRC_FP16_NO_ARITH}"
        )
        precisions["int8"] = Kernel.FAST
        if "i8mm" in flags:
            kernel = "qs8-qc8w-gemm/gen/qs8-qc8w-gemm-1x16c8-minmax-fp32-neoni8mm.c"
        elif "asimddp" in flags:
            kernel = "qs8-qc8w-gemm/gen/qs8-qc8w-gemm-4x16c4-minmax-fp32-neondot.c"
        else:
            kernel = "qs8-qc8w-gemm/gen/qs8-qc8w-gemm-1x16-minmax-fp32-neon-mlal-lane.c"
        src["precisions.int8"] = (
            f"{source}: NEON (asimd){' with dot product (asimddp)' if 'asimddp' in flags else ''}"
            f"{' and int8 matrix multiply (i8mm)' if 'i8mm' in flags else ''}; XNNPACK ships int8 GEMM kernels for it "
            f"({XNNPACK_KERNELS}/{kernel})"
        )
        if fp16_fast:
            cm, why = 8, f"XNNPACK's FP16 GEMM kernels tile 8 output channels ({XNNPACK_KERNELS}/f16-gemm/gen/f16-gemm-1x8-minmax-neonfp16arith-ld64.c)"
        else:
            cm, why = 4, f"a 128-bit NEON register holds 4 fp32 lanes; XNNPACK's NEON fp32 GEMM kernels tile multiples of 4 ({XNNPACK_KERNELS}/f32-gemm/gen/f32-gemm-1x8-minmax-neon-lane-ld64.c)"
    else:
        isa = ()
        precisions["int8"] = Kernel.STORAGE
        src["precisions.int8"] = f"{source}: unknown architecture {info.arch!r}; XNNPACK kernels unknown ({XNNPACK_README}), no int8 speed-up assumed"
        cm, why = 1, f"unknown architecture: no SIMD width assumed ({XNNPACK_README})"
    precisions["int16x8"] = Kernel.STORAGE
    src["precisions.int16x8"] = _SRC_16X8
    precisions["bf16"] = Kernel.NONE
    src["precisions.bf16"] = _SRC_BF16_LITERT

    src.update(
        runtime=f"{source}: CPU host without a usable GPU+TensorRT, so models run on LiteRT with XNNPACK ({XNNPACK_README})",
        device=f"{source}: CPU (https://docs.python.org/3/library/platform.html#platform.machine)",
        arch=f"{source}: platform.machine() (https://docs.python.org/3/library/platform.html#platform.machine)",
        isa_features=f"{source}: kernel-relevant flags, named as in Linux's x86 CPU feature list "
        "(https://github.com/torvalds/linux/blob/master/arch/x86/include/asm/cpufeatures.h) and arm64 hwcaps "
        "(https://docs.kernel.org/arch/arm64/elf_hwcaps.html)",
        channel_multiple=f"{source}: {why}",
        sparse_2_4=_SRC_SPARSE_CPU,
        unstructured_sparsity=_SRC_SPARSE_CPU,
        clustered_weights=_SRC_CLUSTER_CPU,
        full_integer_only=_SRC_FULL_INTEGER,
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
    name: str, compute_capability: tuple[int, int], arch: str = "x86_64", source: str = _SRC_GPU_DETECTED
) -> Target:
    """A TensorRT target for an NVIDIA GPU of ``compute_capability`` (major, minor).

    Rules: dp4a int8 from 6.1, fast fp16 on 5.3/6.0/6.2 and from 7.0 (not 6.1), bf16
    and 2:4 sparse tensor cores from 8.0, fp8 from 8.9; the TensorRT releases that still
    support the GPU come from `tensorrt_releases` (each row cites NVIDIA).
    """
    major, minor = compute_capability
    cc = major + minor / 10.0
    tag = f"{source}: compute capability {major}.{minor}"
    precisions = {"fp32": Kernel.FAST}
    src = {"precisions.fp32": f"{tag}; {_TRT_MATRIX}"}
    fp16_fast = cc >= 7.0 or (major, minor) in ((5, 3), (6, 0), (6, 2))
    precisions["fp16"] = Kernel.FAST if fp16_fast else Kernel.STORAGE
    src["precisions.fp16"] = f"{tag}; {_CUDA_GUIDE}: " + (
        "full-rate or faster FP16 arithmetic" if fp16_fast else "FP16 add/multiply at 2 results per clock per SM on 6.1 vs 128 for FP32"
    )
    precisions["int8"] = Kernel.FAST if cc >= 6.1 else Kernel.NONE
    src["precisions.int8"] = f"{tag}; {_TRT_MATRIX} (dp4a int8 from 6.1, int8 tensor cores from 7.2/7.5)"
    precisions["bf16"] = Kernel.FAST if cc >= 8.0 else Kernel.NONE
    src["precisions.bf16"] = f"{tag}; {_TE_MATRIX}: 'BF16 requires compute capability 8.0 or higher'"
    precisions["fp8"] = Kernel.FAST if cc >= 8.9 else Kernel.NONE
    src["precisions.fp8"] = f"{tag}; {_TE_MATRIX}: FP8 'requires compute capability 8.9 or higher'"
    precisions["int16x8"] = Kernel.NONE
    src["precisions.int16x8"] = _TRT_QUANT_TYPES
    if cc >= 7.2:
        cm, why = 16, "int8 tensor cores want GEMM dimensions in multiples of 16 bytes = 16 int8 channels"
    elif cc >= 7.0:
        cm, why = 8, "fp16 tensor cores want GEMM dimensions in multiples of 16 bytes = 8 fp16 channels"
    else:
        cm, why = 4, "no tensor cores; dp4a multiplies 4 packed int8 values (CUDA C++ Programming Guide, __dp4a)"
    version = version_specifier_for(cc)
    newest = newest_line_for(cc)
    notes: tuple[str, ...] = ()
    if version:
        last = newest.last if newest is not None else "none"
        notes = (f"TensorRT releases after {last} do not support compute capability {major}.{minor}; build with TensorRT {version}",)
    version_source = newest.source if newest is not None else "no TensorRT release supports this GPU"
    src.update(
        runtime=f"{source}: an NVIDIA GPU and the tensorrt package are here; TensorRT builds the engine from the ONNX "
        "(https://docs.nvidia.com/deeplearning/tensorrt/latest/index.html)",
        device=f"{tag}; {_CUDA_GPUS}",
        arch=f"{source}: platform.machine() (https://docs.python.org/3/library/platform.html#platform.machine)",
        compute_capability=f"{tag}; {_CUDA_GPUS}",
        channel_multiple=f"{tag}: {why} ({_MATMUL_GUIDE})",
        sparse_2_4=f"{tag}; 2:4 sparse tensor cores from Ampere (8.0), used by TensorRT 8.0+ ({_SPARSITY_BLOG})",
        unstructured_sparsity=f"TensorRT accelerates only 2:4 structured sparsity ({_SPARSITY_BLOG})",
        clustered_weights=f"TensorRT computes from dense weights; its quantized types have no palettes ({_TRT_QUANT_TYPES})",
        full_integer_only="TensorRT mixes float and quantized layers in one engine (explicit Q/DQ placement, "
        "https://docs.nvidia.com/deeplearning/tensorrt/latest/inference-library/quantized-types-explicit-quantization.html)",
        runtime_version=f"{tag}; {version_source}",
        notes=f"{tag}; {version_source}",
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


def tensorrt_available() -> bool:
    """Whether a ``tensorrt`` package is installed (found, not imported: importing can fail or be slow)."""
    try:
        return importlib.util.find_spec("tensorrt") is not None
    except (ImportError, ValueError):
        return False


def detect(gpus: bool = True) -> Target:
    """This host as a `Target`: a TensorRT GPU target when an NVIDIA GPU with a known
    compute capability (nvidia-smi or NVML, see `targets.nvidia`) and the tensorrt
    package are both present, else a LiteRT CPU target from /proc/cpuinfo.

    ``gpus=False`` skips asking the driver about GPUs.
    """
    arch = normalize_arch(host_cpu().arch)
    if gpus and tensorrt_available():
        for gpu in list_gpus():
            if gpu.compute_capability:
                return gpu_target(gpu.name, gpu.compute_capability, arch=arch, source=_SRC_GPU_DETECTED)
    return cpu_target(host_cpu())


def _version(dist: str) -> Optional[str]:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def describe_host(gpus: bool = True) -> dict[str, Any]:
    """What the CLI's ``targets`` command shows about this machine (JSON-serialisable)."""
    cpu = host_cpu()
    gpu_list: list[GpuInfo] = list_gpus() if gpus else []
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
            {"name": g.name, "compute_capability": ".".join(map(str, g.compute_capability)) if g.compute_capability else None}
            for g in gpu_list
        ],
        "tensorrt_installed": tensorrt_available(),
        "tensorrt_version": trt_version,
        "tensorflow_version": _version("tensorflow-cpu") or _version("tensorflow"),
        "ai_edge_litert_version": _version("ai-edge-litert"),
        "target": target.to_dict(),
    }
