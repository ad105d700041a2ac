"""The `Target`: facts about the hardware and runtime a model will run on.

Every pass asks the target before it runs (`Target.supports`, `Target.kernel`), so a
pass never buys what the hardware cannot use. Each fact read from a YAML profile keeps
its `source` so the report can say why we believe it.
"""
from __future__ import annotations

import dataclasses
import enum
import platform
from typing import Any, Mapping

from kerascompress.errors import ConfigError


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

    def runs_here(self) -> bool:
        """Whether latency measured on this host says something about the target.

        True for LiteRT targets of this host's CPU architecture; a TensorRT or foreign
        target must be measured on the device itself.
        """
        host = {"amd64": "x86_64", "aarch64": "arm64"}.get(platform.machine().lower(), platform.machine().lower())
        return self.runtime == "litert" and self.device == "cpu" and self.arch == host

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["precisions"] = {k: Kernel(v).value for k, v in self.precisions.items()}
        return d
