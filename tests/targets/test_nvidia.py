"""GPU discovery without TensorFlow: nvidia-smi, and NVML when nvidia-smi cannot tell.

The driver tools are fakes put on PATH / in sys.modules, so these tests hold on any host."""
from __future__ import annotations

import sys
import types

import pytest

from kerascompress.targets import nvidia
from kerascompress.targets.nvidia import GpuInfo, list_gpus, local_compute_capability, parse_nvidia_smi


@pytest.fixture
def path(monkeypatch, tmp_path):
    """An empty PATH folder to put fake tools in; pynvml is not importable unless a test adds it."""
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setitem(sys.modules, "pynvml", None)
    return tmp_path


def _tool(folder, name, script):
    tool = folder / name
    tool.write_text("#!/bin/sh\n" + script)
    tool.chmod(0o755)


def test_parse_rows_names_with_commas_and_unknown_capabilities():
    rows = parse_nvidia_smi("NVIDIA A100-SXM4-40GB, 8.0\nTesla P4, 6.1\nWeird, Name, 9.0\nOld GPU, [N/A]\n\n")
    assert rows == [
        GpuInfo("NVIDIA A100-SXM4-40GB", (8, 0)), GpuInfo("Tesla P4", (6, 1)),
        GpuInfo("Weird, Name", (9, 0)), GpuInfo("Old GPU", None),
    ]
    assert rows[1].cc == pytest.approx(6.1) and rows[3].cc is None


def test_nvidia_smi_is_asked_for_name_and_compute_cap(path):
    _tool(path, "nvidia-smi", '[ "$*" = "--query-gpu=name,compute_cap --format=csv,noheader" ] || exit 3\n'
                              'echo "NVIDIA H100 80GB HBM3, 9.0"\necho "NVIDIA H100 80GB HBM3, 9.0"\n')
    assert list_gpus() == [GpuInfo("NVIDIA H100 80GB HBM3", (9, 0))] * 2
    assert local_compute_capability() == pytest.approx(9.0)


def test_an_r470_driver_without_compute_cap_falls_back_to_nvml(path, monkeypatch):
    _tool(path, "nvidia-smi", 'echo \'Field "compute_cap" is not a valid field to query.\' >&2\nexit 2\n')
    calls = []
    fake = types.SimpleNamespace(
        nvmlInit=lambda: calls.append("init"),
        nvmlShutdown=lambda: calls.append("shutdown"),
        nvmlDeviceGetCount=lambda: 1,
        nvmlDeviceGetHandleByIndex=lambda i: f"handle{i}",
        nvmlDeviceGetName=lambda h: b"Tesla T4",
        nvmlDeviceGetCudaComputeCapability=lambda h: (7, 5),
    )
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    assert list_gpus() == [GpuInfo("Tesla T4", (7, 5))]
    assert calls == ["init", "shutdown"]


def test_no_driver_means_no_gpu(path):
    assert list_gpus() == [] and local_compute_capability() is None


def test_nvml_that_does_not_initialise_means_no_gpu(path, monkeypatch):
    def fail():
        raise RuntimeError("NVML Shared Library Not Found")

    monkeypatch.setitem(sys.modules, "pynvml", types.SimpleNamespace(nvmlInit=fail))
    assert nvidia._from_nvml() is None and list_gpus() == []
