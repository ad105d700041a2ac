"""`Target`: the gate API passes call (kernel, supports, source, runs_here, to_dict)."""
from __future__ import annotations

import pytest

from kerascompress.errors import ConfigError
from kerascompress.targets import Kernel, Target
from kerascompress.targets.cpuinfo import CpuInfo


def _target(**kw) -> Target:
    base = dict(
        name="t",
        precisions={"fp32": Kernel.FAST, "fp16": Kernel.STORAGE, "int8": Kernel.FAST},
        sources={"precisions.int8": "a datasheet"},
    )
    base.update(kw)
    return Target(**base)


def test_kernel_and_supports_tell_fast_from_storage_only():
    t = _target()
    assert t.kernel("int8") is Kernel.FAST and t.supports("int8")
    assert t.kernel("fp16") is Kernel.STORAGE and not t.supports("fp16")
    assert t.kernel("fp8") is Kernel.NONE and not t.supports("fp8")  # unlisted = unsupported


def test_feature_questions():
    t = _target(sparse_2_4=True)
    assert t.supports("sparse_2_4") and not t.supports("clustered_weights")
    assert t.supports("float_fallback")
    assert not _target(full_integer_only=True).supports("float_fallback")


def test_unknown_precision_or_capability_is_a_config_error():
    with pytest.raises(ConfigError, match="fp12"):
        _target().kernel("fp12")
    with pytest.raises(ConfigError, match="warp_drive"):
        _target().supports("warp_drive")


def test_source_and_new_fields_default_empty():
    t = _target()
    assert t.source("precisions.int8") == "a datasheet"
    assert t.source("channel_multiple") == ""
    assert t.runtime_version == "" and t.notes == ()


AVX2_HOST = CpuInfo("x86_64", "Xeon E5-2680 v3", frozenset("sse4_1 avx fma f16c avx2".split()))
VNNI_HOST = CpuInfo("x86_64", "Xeon 8259CL", frozenset("avx fma f16c avx2 avx512f avx512bw avx512vl avx512_vnni".split()))
A72_HOST = CpuInfo("arm64", "Cortex-A72", frozenset("fp asimd evtstrm crc32 cpuid".split()))
A76_HOST = CpuInfo("arm64", "Cortex-A76", frozenset("fp asimd fphp asimdhp asimddp atomics".split()))


def test_runs_here_needs_a_litert_cpu_of_this_arch():
    assert _target(arch="x86_64", isa_features=("avx2",)).runs_here(AVX2_HOST)
    gpu = _target(arch="x86_64", runtime="tensorrt", device="gpu")
    assert gpu.why_not_here(AVX2_HOST) == "t runs tensorrt on a gpu, which this host is not"
    assert not _target(arch="armv7e-m", device="mcu").runs_here(AVX2_HOST)
    assert _target(arch="arm64").why_not_here(AVX2_HOST) == "t is an arm64 CPU and this host is x86_64"


def test_an_avx2_profile_is_not_timed_on_a_vnni_host_nor_the_reverse():
    avx2 = _target(name="x86-avx2", arch="x86_64", isa_features=("avx", "avx2", "fma", "f16c"))
    vnni = _target(name="x86-avx512-vnni", arch="x86_64", isa_features=("avx2", "fma", "avx512f", "avx512_vnni"))
    why = avx2.why_not_here(VNNI_HOST)
    assert why.startswith("this host has avx512_vnni, avx512f, which the target does not")
    assert "XNNPACK kernels" in why
    assert vnni.why_not_here(AVX2_HOST).startswith("this host lacks avx512_vnni, avx512f")
    assert avx2.runs_here(AVX2_HOST) and vnni.runs_here(VNNI_HOST)
    # features that pick no kernel (fma, f16c, avx512bw) do not matter
    assert _target(arch="x86_64", isa_features=("avx2", "avx512f", "avx512_vnni")).runs_here(VNNI_HOST)


def test_arm_fp16_and_dot_product_decide_whether_an_arm_host_stands_in():
    a72 = _target(arch="arm64", isa_features=("fp", "asimd", "crc32"))
    a76 = _target(arch="arm64", isa_features=("fp", "asimd", "fphp", "asimdhp", "asimddp"))
    assert a72.runs_here(A72_HOST) and a76.runs_here(A76_HOST)
    assert a76.why_not_here(A72_HOST).startswith("this host lacks asimddp, asimdhp, fphp")
    assert a72.why_not_here(A76_HOST).startswith("this host has asimddp, asimdhp, fphp")
    i8mm_host = CpuInfo("arm64", "Cortex-A710", A76_HOST.flags | {"i8mm", "bf16"})
    assert a76.why_not_here(i8mm_host).startswith("this host has i8mm")


def test_without_an_argument_the_host_is_read_through_the_injectable_reader(monkeypatch):
    from kerascompress.targets import cpuinfo

    monkeypatch.setattr(cpuinfo, "read_cpuinfo_text", lambda: "processor\t: 0\nflags\t\t: fpu avx2 fma\n")
    monkeypatch.setattr(cpuinfo, "host_machine", lambda: "x86_64")
    assert _target(arch="x86_64", isa_features=("avx2",)).runs_here()
    assert "lacks avx512f" in _target(arch="x86_64", isa_features=("avx2", "avx512f")).why_not_here()


def test_to_dict_is_plain_data():
    d = _target(notes=("n",), runtime_version="<8.7").to_dict()
    assert d["precisions"] == {"fp32": "fast", "fp16": "storage-only", "int8": "fast"}
    assert d["runtime_version"] == "<8.7" and list(d["notes"]) == ["n"]
