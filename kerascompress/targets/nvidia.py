"""NVIDIA GPUs on this host, found without TensorFlow's GPU build.

The declared install is ``tensorflow-cpu``, which never sees a GPU, so GPUs are asked
of the driver: ``nvidia-smi --query-gpu=name,compute_cap`` first, then NVML through
``pynvml`` (PyPI ``nvidia-ml-py``) where nvidia-smi is missing or too old to know the
``compute_cap`` field (R470 drivers answer 'Field "compute_cap" is not a valid field to
query', https://github.com/huggingface/candle/issues/733). NVML's
``nvmlDeviceGetCudaComputeCapability`` returns the same major/minor pair
(https://docs.nvidia.com/deploy/nvml-api/group__nvmlDeviceQueries.html).
"""
from __future__ import annotations

import dataclasses
import shutil
import subprocess
from typing import Optional


@dataclasses.dataclass(frozen=True)
class GpuInfo:
    """One NVIDIA GPU: its name and CUDA compute capability (None when unknown)."""

    name: str
    compute_capability: Optional[tuple[int, int]]

    @property
    def cc(self) -> Optional[float]:
        """Compute capability as a number (8.7), None when unknown."""
        if self.compute_capability is None:
            return None
        major, minor = self.compute_capability
        return major + minor / 10.0


def parse_compute_cap(text: str) -> Optional[tuple[int, int]]:
    """'8.7' -> (8, 7); None for anything else ('[N/A]', '')."""
    major, sep, minor = text.strip().partition(".")
    if not sep or not major.isdigit() or not minor.isdigit():
        return None
    return int(major), int(minor)


def parse_nvidia_smi(output: str) -> list[GpuInfo]:
    """Rows of ``nvidia-smi --query-gpu=name,compute_cap --format=csv,noheader``."""
    gpus = []
    for line in output.splitlines():
        if not line.strip():
            continue
        name, _, cap = line.rpartition(",")  # a GPU name may contain commas; the capability never does
        if not name:
            name, cap = cap, ""
        gpus.append(GpuInfo(name=name.strip(), compute_capability=parse_compute_cap(cap)))
    return gpus


def _from_nvidia_smi() -> Optional[list[GpuInfo]]:
    """GPUs nvidia-smi reports with their capability; None when it cannot tell."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return None
    try:
        done = subprocess.run(
            [smi, "--query-gpu=name,compute_cap", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None  # e.g. an R470 driver: no compute_cap field; NVML may still know
    gpus = parse_nvidia_smi(done.stdout)
    return gpus if gpus and all(g.compute_capability for g in gpus) else None


def _from_nvml() -> Optional[list[GpuInfo]]:
    """GPUs NVML reports; None when pynvml is not importable or NVML does not initialise."""
    try:
        import pynvml  # type: ignore[import-not-found]  # noqa: PLC0415 - optional
    except Exception:
        return None
    try:
        pynvml.nvmlInit()
    except Exception:
        return None
    try:
        gpus = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = pynvml.nvmlDeviceGetName(handle)
            name = name.decode() if isinstance(name, bytes) else str(name)
            try:
                major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
                cap: Optional[tuple[int, int]] = (int(major), int(minor))
            except Exception:
                cap = None
            gpus.append(GpuInfo(name=name, compute_capability=cap))
        return gpus
    except Exception:
        return None
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass


def list_gpus() -> list[GpuInfo]:
    """NVIDIA GPUs on this host: from nvidia-smi, else NVML; [] when neither answers."""
    for source in (_from_nvidia_smi, _from_nvml):
        gpus = source()
        if gpus:
            return gpus
    return []


def local_compute_capability() -> Optional[float]:
    """Compute capability of this host's first NVIDIA GPU, None when there is none."""
    gpus = [g for g in list_gpus() if g.cc is not None]
    return gpus[0].cc if gpus else None
