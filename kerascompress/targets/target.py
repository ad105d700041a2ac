"""The `Target`: facts about the hardware and runtime a model will run on.

Every pass asks the target before it runs (`Target.supports`, `Target.kernel`), so a
pass never buys what the hardware cannot use. Each fact read from a YAML profile keeps
its `source` so the report can say why we believe it.
"""
from __future__ import annotations

import dataclasses
import enum
from typing import Any, Mapping, Optional

from kerascompress.errors import ConfigError
from kerascompress.targets.cpuinfo import CpuInfo, host_cpu, kernel_feature_difference


class Kernel(str, enum.Enum):
    """How a target executes a number format."""

    FAST = "fast"  # native kernels: smaller and faster
    STORAGE = "storage-only"  # stored compactly, computed in a wider format: size only
    NONE = "unsupported"  # cannot run at all

    def __str__(self) -> str:  # pragma: no cover - trivial
        return self.value


PRECISIONS = ("fp32", "fp16", "bf16", "int8", "int16x8", "fp8", "int4")

#: Features a pass may ask about with `Target.supports` besides precisions.
FEATURES = (
    "sparse_2_4",  # N:M sparse kernels (NVIDIA sparse tensor cores)
    "unstructured_sparsity",  # runtime has fast kernels for arbitrary sparse weights
    "clustered_weights",  # runtime computes from palettized (clustered) weights
    "float_fallback",  # a quantized model may keep some layers in float
)


@dataclasses.dataclass(frozen=True)
class Target:
    """Capabilities of one deployment target.

    ``precisions`` maps each name in `PRECISIONS` to a `Kernel`; a precision not listed
    is `Kernel.NONE`. ``sources`` maps a fact's name (a field name, or
    ``"precisions.int8"``) to where the fact comes from (a datasheet, a doc URL, a
    measurement).
    """

    name: str
    description: str = ""
    runtime: str = "litert"  # "litert" or "tensorrt"
    device: str = "cpu"  # "cpu", "gpu", "npu", "mcu"
    arch: str = "x86_64"  # "x86_64", "arm64", "armv7m", ...
    precisions: Mapping[str, Kernel] = dataclasses.field(default_factory=dict)
    isa_features: tuple[str, ...] = ()
    compute_capability: float | None = None  # NVIDIA GPUs only, e.g. 8.7
    sparse_2_4: bool = False
    unstructured_sparsity: bool = False
    clustered_weights: bool = False
    full_integer_only: bool = False  # int8 in, int8 out, no float ops at all
    channel_multiple: int = 1  # keep pruned widths a multiple of this (SIMD / tensor cores)
    flash_bytes: int | None = None  # model storage budget
    ram_bytes: int | None = None  # activation memory budget
    sources: Mapping[str, str] = dataclasses.field(default_factory=dict)
    #: Versions of the runtime that can deploy to this target, as a PEP 440 specifier
    #: (e.g. ``"<=8.6"`` for a GPU newer TensorRT releases dropped); '' = any current one.
    runtime_version: str = ""
    #: Caveats a report should repeat (e.g. "TensorRT 10+ does not support sm_61").
    notes: tuple[str, ...] = ()

    def kernel(self, precision: str) -> Kernel:
        """How this target executes ``precision`` (one of `PRECISIONS`)."""
        if precision not in PRECISIONS:
            raise ConfigError(f"unknown precision {precision!r}; known: {', '.join(PRECISIONS)}")
        return Kernel(self.precisions.get(precision, Kernel.NONE))

    def supports(self, what: str) -> bool:
        """True when the target has *fast* kernels for a precision, or has a feature.

        ``what`` is a precision name (``"int8"``, ``"fp16"``...) or a name in `FEATURES`.
        Storage-only precisions answer False: use `kernel` to tell them apart.
        """
        if what in PRECISIONS:
            return self.kernel(what) is Kernel.FAST
        if what == "float_fallback":
            return not self.full_integer_only
        if what in FEATURES:
            return bool(getattr(self, what))

        raise ConfigError(
            f"unknown capability {what!r}; ask about a precision ({', '.join(PRECISIONS)}) "
            f"or a feature ({', '.join(FEATURES)})"
        )

    def source(self, fact: str) -> str:
        """Where the fact named ``fact`` comes from ('' when the profile gives none)."""
        return self.sources.get(fact, "")

    def runs_here(self, host: Optional[CpuInfo] = None) -> bool:
        """Whether latency measured on this host says something about the target
        (see `why_not_here`; ``host`` replaces this machine's CPU, for tests)."""
        return self.why_not_here(host) is None

    def why_not_here(self, host: Optional[CpuInfo] = None) -> Optional[str]:
        """Why latency measured on this host would not be the target's, or None.

        Only a LiteRT CPU target of this host's architecture can be timed here, and only
        when the host has the same kernel-deciding ISA features (`KERNEL_FEATURES`):
        XNNPACK picks other kernels on an AVX-512 VNNI host than on an AVX2-only one,
        and on an Armv8.2 FP16 core than on a Cortex-A72.
        """
        if self.runtime != "litert" or self.device != "cpu":
            return f"{self.name} runs {self.runtime} on a {self.device}, which this host is not"
        host = host if host is not None else host_cpu()
        if self.arch != host.arch:
            return f"{self.name} is an {self.arch} CPU and this host is {host.arch}"
        differs = kernel_feature_difference(self.arch, self.isa_features, host)
        if differs:
            return (
                f"{differs} ({self.name} lists {', '.join(self.isa_features) or 'no ISA features'}); "
                "these features decide which XNNPACK kernels run, so timings here would not be the target's"
            )
        return None

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["precisions"] = {k: Kernel(v).value for k, v in self.precisions.items()}
        return d
