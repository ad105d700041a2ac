"""Host detection: pure cpuinfo parsing on sample texts, GPU rules, and `detect` on injected hosts.

No test here reads this machine's /proc/cpuinfo or asks its driver about GPUs: the host
is injected (`targets.cpuinfo.read_cpuinfo_text`, `host_machine`, `targets.nvidia`)."""
from __future__ import annotations

import importlib
import json

import pytest

from kerascompress.targets import Kernel, describe_host, detect
from kerascompress.targets.detect import (
    cpu_target,
    gpu_target,
    normalize_arch,
    parse_cpuinfo,
)

_X86_COMMON = (
    "fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 ht "
    "syscall nx lm constant_tsc pni pclmulqdq ssse3 fma cx16 sse4_1 sse4_2 movbe popcnt aes xsave avx f16c "
    "rdrand hypervisor lahf_lm abm bmi1 avx2 bmi2 erms"
)


def _x86(model: str, extra: str, cpus: int = 2) -> str:
    block = (
        "processor\t: {i}\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 85\n"
        f"model name\t: {model}\nstepping\t: 7\ncpu MHz\t\t: 2500.000\ncache size\t: 36608 KB\n"
        f"flags\t\t: {_X86_COMMON} {extra}\nbogomips\t: 5000.00\naddress sizes\t: 46 bits physical, 48 bits virtual\n"
    )
    return "\n".join(block.format(i=i) for i in range(cpus)) + "\n"


X86_HASWELL = _x86("Intel(R) Xeon(R) CPU E5-2680 v3 @ 2.50GHz", "")
X86_VNNI = _x86(
    "Intel(R) Xeon(R) Platinum 8259CL CPU @ 2.50GHz",
    "avx512f avx512dq avx512cd avx512bw avx512vl avx512_vnni",
)
X86_SAPPHIRE = _x86(
    "Intel(R) Xeon(R) Platinum 8480+",
    "avx512f avx512bw avx512vl avx512_vnni avx_vnni avx512_bf16 avx512_fp16 amx_bf16 amx_tile amx_int8",
)

RPI4 = """processor	: 0
BogoMIPS	: 108.00
Features	: fp asimd evtstrm crc32 cpuid
CPU implementer	: 0x41
CPU architecture: 8
CPU variant	: 0x0
CPU part	: 0xd08
CPU revision	: 3

processor	: 1
BogoMIPS	: 108.00
Features	: fp asimd evtstrm crc32 cpuid
CPU implementer	: 0x41
CPU architecture: 8
CPU variant	: 0x0
CPU part	: 0xd08
CPU revision	: 3

Hardware	: BCM2835
Revision	: c03111
Serial		: 10000000abcdef01
Model		: Raspberry Pi 4 Model B Rev 1.1
"""

_A76_FEATURES = "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp"
PHONE_A76 = "".join(
    f"processor\t: {i}\nBogoMIPS\t: 52.00\nFeatures\t: {_A76_FEATURES}\nCPU implementer\t: 0x41\n"
    f"CPU architecture: 8\nCPU variant\t: {'0x1' if i < 4 else '0x4'}\nCPU part\t: {'0xd05' if i < 4 else '0xd0b'}\n"
    "CPU revision\t: 0\n\n"
    for i in range(8)
) + "Hardware\t: Qualcomm Technologies, Inc SM8150\n"


def test_normalize_arch():
    assert normalize_arch("AMD64") == "x86_64" and normalize_arch("aarch64") == "arm64"
    assert normalize_arch("x86_64") == "x86_64"


def test_parse_x86_with_vnni():
    info = parse_cpuinfo(X86_VNNI)
    assert info.arch == "x86_64" and info.cores == 2
    assert info.model == "Intel(R) Xeon(R) Platinum 8259CL CPU @ 2.50GHz"
    assert {"avx2", "avx512f", "avx512_vnni"} <= info.flags and "avx512_fp16" not in info.flags
    t = cpu_target(info)
    assert (t.runtime, t.device, t.arch) == ("litert", "cpu", "x86_64")
    assert t.kernel("int8") is Kernel.FAST and t.kernel("fp16") is Kernel.STORAGE
    assert t.kernel("int16x8") is Kernel.STORAGE and t.kernel("bf16") is Kernel.NONE
    assert t.channel_multiple == 16 and "avx512_vnni" in t.isa_features
    assert "ARMv8.2 FP16" in t.source("precisions.fp16")  # says why fp16 is storage-only


def test_parse_x86_without_vnni():
    info = parse_cpuinfo(X86_HASWELL)
    assert "avx512_vnni" not in info.flags and "avx2" in info.flags
    t = cpu_target(info)
    assert t.supports("int8") and not t.supports("fp16")
    assert t.channel_multiple == 8
    assert "avx512f" not in t.isa_features and "avx2" in t.isa_features


def test_x86_with_avx512_fp16_keeps_fp16_storage_only():
    # XNNPACK computes FP16 natively only on Arm (delegate README); on x86 FP16 weights run in FP32
    t = cpu_target(parse_cpuinfo(X86_SAPPHIRE))
    assert t.kernel("fp16") is Kernel.STORAGE and t.supports("int8")
    assert "avx512_fp16 present, but" in t.source("precisions.fp16")
    assert "ARMv8.2 FP16" in t.source("precisions.fp16")
    assert {"amx_tile", "amx_int8", "avx512_fp16"} <= set(t.isa_features)


def test_x86_without_avx2_does_not_promise_int8_speed():
    text = _x86("old", "").replace(" avx2", "").replace(" fma", "")
    t = cpu_target(parse_cpuinfo(text))
    assert t.kernel("int8") is Kernel.STORAGE and t.channel_multiple == 4


def test_parse_raspberry_pi_4():
    info = parse_cpuinfo(RPI4)
    assert info.arch == "arm64" and info.cores == 2
    assert info.model == "Raspberry Pi 4 Model B Rev 1.1 (Cortex-A72)"
    assert info.flags == frozenset("fp asimd evtstrm crc32 cpuid".split())
    t = cpu_target(info)
    assert t.kernel("fp16") is Kernel.STORAGE and t.supports("int8")
    assert t.channel_multiple == 4 and set(t.isa_features) == {"fp", "asimd"}


def test_parse_cortex_a76_phone():
    info = parse_cpuinfo(PHONE_A76)
    assert info.arch == "arm64" and info.cores == 8
    assert info.model == "Cortex-A55 + Cortex-A76"
    t = cpu_target(info)
    assert t.supports("fp16") and t.supports("int8")
    assert {"fphp", "asimdhp", "asimddp"} <= set(t.isa_features)
    assert t.channel_multiple == 8
    assert "asimddp" in t.source("precisions.int8")


def test_flags_are_those_every_core_has():
    # a big.LITTLE chip whose little cores lack FP16: FP16 cannot be relied on
    mixed = PHONE_A76.replace(f"Features\t: {_A76_FEATURES}\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x1",
                              "Features\t: fp asimd\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x1")
    info = parse_cpuinfo(mixed)
    assert "asimdhp" not in info.flags
    assert not cpu_target(info).supports("fp16")


def test_machine_argument_wins_and_empty_text_is_safe():
    assert parse_cpuinfo(RPI4, machine="aarch64").arch == "arm64"
    empty = parse_cpuinfo("", machine="x86_64")
    assert empty.arch == "x86_64" and empty.flags == frozenset()
    assert cpu_target(parse_cpuinfo("")).kernel("int8") is Kernel.STORAGE


@pytest.mark.parametrize(
    "cc, fp16, bf16, fp8, sparse, cm, version",
    [
        ((6, 1), Kernel.STORAGE, False, False, False, 4, "<8.7"),
        ((7, 0), Kernel.FAST, False, False, False, 8, "<10.5"),
        ((7, 5), Kernel.FAST, False, False, False, 16, ""),
        ((8, 0), Kernel.FAST, True, False, True, 16, ""),
        ((8, 9), Kernel.FAST, True, True, True, 16, ""),
        ((9, 0), Kernel.FAST, True, True, True, 16, ""),
    ],
)
def test_gpu_rules(cc, fp16, bf16, fp8, sparse, cm, version):
    t = gpu_target("GPU", cc)
    assert (t.runtime, t.device) == ("tensorrt", "gpu")
    assert t.compute_capability == pytest.approx(cc[0] + cc[1] / 10)
    assert t.kernel("fp16") is fp16 and t.supports("int8")
    assert t.supports("bf16") is bf16 and t.supports("fp8") is fp8 and t.supports("sparse_2_4") is sparse
    assert t.channel_multiple == cm and t.runtime_version == version
    assert bool(t.notes) is bool(version)


def test_gpu_rules_agree_with_shipped_profiles():
    from kerascompress.targets import load

    for name, cc in (("nvidia-pascal-sm61", (6, 1)), ("nvidia-t4-sm75", (7, 5)), ("nvidia-a100-sm80", (8, 0)),
                     ("nvidia-l4-sm89", (8, 9)), ("nvidia-h100-sm90", (9, 0))):
        shipped, rule = load(name), gpu_target("x", cc)
        assert dict(shipped.precisions) == dict(rule.precisions), name
        assert (shipped.sparse_2_4, shipped.channel_multiple, shipped.runtime_version) == (
            rule.sparse_2_4, rule.channel_multiple, rule.runtime_version), name


def test_cpu_rules_agree_with_shipped_profiles():
    from kerascompress.targets import load

    for name, text in (("x86-avx512-vnni", X86_VNNI), ("x86-avx2", X86_HASWELL),
                       ("arm64-cortex-a72", RPI4), ("arm64-fp16", PHONE_A76)):
        shipped, rule = load(name), cpu_target(parse_cpuinfo(text))
        assert dict(shipped.precisions) == dict(rule.precisions), name
        assert shipped.channel_multiple == rule.channel_multiple, name


@pytest.fixture
def host(monkeypatch, tmp_path):
    """Make `detect` see the cpuinfo text and machine given, and only the GPU tools put in the
    returned (empty) PATH folder; NVML (pynvml) is made unavailable."""
    from kerascompress.targets import cpuinfo, nvidia

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setattr(nvidia, "_from_nvml", lambda: None)

    def use(text: str, machine: str):
        monkeypatch.setattr(cpuinfo, "read_cpuinfo_text", lambda: text)
        monkeypatch.setattr(cpuinfo, "host_machine", lambda: machine)
        return bin_dir

    return use


def test_detect_on_an_injected_vnni_host(host):
    host(X86_VNNI, "x86_64")
    t = detect()
    assert (t.runtime, t.device, t.arch) == ("litert", "cpu", "x86_64")
    assert t.kernel("int8") is Kernel.FAST and t.kernel("fp16") is Kernel.STORAGE
    assert "avx512_vnni" in t.isa_features and "avx512_fp16" not in t.isa_features
    assert t.runs_here()  # the detected host always stands in for itself
    assert t.source("precisions.fp16").startswith("detected: /proc/cpuinfo")
    for fact in ("runtime", "device", "arch", "isa_features", "channel_multiple", "precisions.int8"):
        assert t.source(fact), fact


def test_detect_on_an_injected_raspberry_pi(host):
    host(RPI4, "aarch64")
    t = detect()
    assert (t.name, t.arch, t.channel_multiple) == ("host-arm64", "arm64", 4)
    assert t.kernel("fp16") is Kernel.STORAGE and t.runs_here()


def test_no_detected_source_claims_a_measured_speed_up(host):
    """A host claim is a capability with a public source, never a speed measured elsewhere."""
    for text, machine in ((X86_VNNI, "x86_64"), (X86_HASWELL, "x86_64"), (RPI4, "aarch64"), (PHONE_A76, "aarch64")):
        host(text, machine)
        for fact, source in detect().sources.items():
            assert "3x faster" not in source and "FINDINGS" not in source, (machine, fact)


def test_describe_host_is_json(host):
    host(X86_HASWELL, "x86_64")
    d = describe_host()
    json.dumps(d)
    assert d["arch"] == "x86_64" and d["gpus"] == [] and d["target"]["runtime"] == "litert"
    assert "avx2" in d["isa_features"] and "avx512_vnni" not in d["isa_features"]
    assert d["cpu_model"] == "Intel(R) Xeon(R) CPU E5-2680 v3 @ 2.50GHz"
    assert isinstance(d["tensorrt_installed"], bool) and d["tensorflow_version"]


def test_auto_finds_a_gpu_through_a_fake_nvidia_smi(host, monkeypatch):
    """tensorflow-cpu sees no GPU; the driver's nvidia-smi does, with its compute capability."""
    detect_mod = importlib.import_module("kerascompress.targets.detect")

    bin_dir = host(X86_HASWELL, "x86_64")
    smi = bin_dir / "nvidia-smi"
    smi.write_text('#!/bin/sh\n[ "$1" = "--query-gpu=name,compute_cap" ] || exit 2\necho "NVIDIA L4, 8.9"\n')
    smi.chmod(0o755)
    monkeypatch.setattr(detect_mod, "tensorrt_available", lambda: True)
    t = detect()
    assert (t.runtime, t.device, t.compute_capability) == ("tensorrt", "gpu", pytest.approx(8.9))
    assert t.name == "host-gpu-sm89" and t.supports("fp8") and t.runtime_version == ""
    assert "nvidia-smi" in t.source("compute_capability")
    assert describe_host()["gpus"] == [{"name": "NVIDIA L4", "compute_capability": "8.9"}]


def test_a_gpu_without_tensorrt_leaves_auto_on_the_cpu(host, monkeypatch):
    detect_mod = importlib.import_module("kerascompress.targets.detect")

    bin_dir = host(X86_HASWELL, "x86_64")
    (bin_dir / "nvidia-smi").write_text('#!/bin/sh\necho "Tesla P4, 6.1"\n')
    (bin_dir / "nvidia-smi").chmod(0o755)
    monkeypatch.setattr(detect_mod, "tensorrt_available", lambda: False)
    assert detect().runtime == "litert"
    assert describe_host()["gpus"] == [{"name": "Tesla P4", "compute_capability": "6.1"}]
