"""The host CPU's features, read from /proc/cpuinfo, reduced to what decides kernels.

Latency measured here says something about a target only when this host would run the
same kernels, and XNNPACK picks its kernels by ISA features (AVX2, AVX-512, VNNI on
x86; FP16 arithmetic, dot product, I8MM on Arm). Parsing is a pure function of the
text, and the host is read through `read_cpuinfo_text` / `host_machine`, so tests can
hand in any machine's /proc/cpuinfo.

Flag names are the Linux kernel's: x86 in ``arch/x86/include/asm/cpufeatures.h``
(https://github.com/torvalds/linux/blob/master/arch/x86/include/asm/cpufeatures.h), arm64
in ``Documentation/arch/arm64/elf_hwcaps.rst`` (https://docs.kernel.org/arch/arm64/elf_hwcaps.html).
"""
from __future__ import annotations

import dataclasses
import platform
from pathlib import Path
from typing import Callable, Optional

_ARCH_ALIASES = {"amd64": "x86_64", "x64": "x86_64", "aarch64": "arm64", "armv8l": "arm64", "arm64": "arm64"}

#: CPU flags that decide a kernel or are worth showing; everything else is noise here.
X86_FEATURES = (
    "sse4_1", "avx", "fma", "f16c", "avx2", "avx_vnni", "avx512f", "avx512bw", "avx512vl",
    "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_int8", "amx_bf16", "amx_fp16",
)
ARM_FEATURES = ("fp", "asimd", "fphp", "asimdhp", "asimddp", "i8mm", "bf16", "sve", "sve2", "sme")

#: Features whose presence changes which XNNPACK kernels run, per architecture. A host
#: stands in for a CPU target only when it has exactly the target's subset of these:
#: x86 AVX2 / AVX-512 / VNNI int8 dot products; arm64 FP16 arithmetic (scalar fphp,
#: vector asimdhp), int8 dot product (asimddp) and int8 matrix multiply (i8mm).
KERNEL_FEATURES: dict[str, tuple[str, ...]] = {
    "x86_64": ("avx2", "avx512f", "avx512_vnni", "avx_vnni"),
    "arm64": ("fphp", "asimdhp", "asimddp", "i8mm"),
}

#: A few Arm "CPU part" ids (implementer 0x41) to name the core in descriptions.
ARM_PARTS = {
    "0xd03": "Cortex-A53", "0xd04": "Cortex-A35", "0xd05": "Cortex-A55", "0xd07": "Cortex-A57",
    "0xd08": "Cortex-A72", "0xd09": "Cortex-A73", "0xd0a": "Cortex-A75", "0xd0b": "Cortex-A76",
    "0xd0c": "Neoverse-N1", "0xd0d": "Cortex-A77", "0xd41": "Cortex-A78", "0xd44": "Cortex-X1",
    "0xd46": "Cortex-A510", "0xd47": "Cortex-A710", "0xd48": "Cortex-X2", "0xd40": "Neoverse-V1",
    "0xd49": "Neoverse-N2", "0xd4f": "Neoverse-V2",
}


@dataclasses.dataclass(frozen=True)
class CpuInfo:
    """What /proc/cpuinfo says about the CPU, reduced to what decides kernels."""

    arch: str  # "x86_64", "arm64", or the raw machine name
    model: str  # "AMD EPYC 9R14", "Cortex-A76", "Raspberry Pi 4 Model B Rev 1.1", ...
    flags: frozenset[str]  # features every core has
    cores: int = 0

    def kernel_features(self) -> frozenset[str]:
        """The flags among `KERNEL_FEATURES` of this architecture."""
        return self.flags & frozenset(KERNEL_FEATURES.get(self.arch, ()))


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


def read_cpuinfo_text() -> str:
    """This host's /proc/cpuinfo ('' where there is none, e.g. macOS or Windows)."""
    try:
        return Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def host_machine() -> str:
    """This host's machine name as `platform.machine` spells it."""
    return platform.machine()


def host_cpu(reader: Optional[Callable[[], str]] = None, machine: Optional[str] = None) -> CpuInfo:
    """This host's `CpuInfo`; ``reader`` (returning /proc/cpuinfo text) and ``machine``
    replace the real host's, for tests and for describing another machine."""
    text = (reader or read_cpuinfo_text)()
    info = parse_cpuinfo(text, machine=machine or host_machine())
    if not info.model and reader is None:
        info = dataclasses.replace(info, model=platform.processor())
    return info


def kernel_feature_difference(target_arch: str, target_features: tuple[str, ...] | frozenset[str],
                              host: CpuInfo) -> Optional[str]:
    """How ``host`` differs from a CPU with ``target_features`` in the features that pick
    kernels (`KERNEL_FEATURES`), or None when it does not."""
    relevant = frozenset(KERNEL_FEATURES.get(target_arch, ()))
    want = frozenset(target_features) & relevant
    have = host.kernel_features()
    if want == have:
        return None
    parts = []
    if want - have:
        parts.append(f"this host lacks {', '.join(sorted(want - have))}")
    if have - want:
        parts.append(f"this host has {', '.join(sorted(have - want))}, which the target does not")
    return "; ".join(parts)
