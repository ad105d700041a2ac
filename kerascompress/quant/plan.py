"""`PrecisionPlan`: the number format a model is to be exported at.

It lives below both the passes (which choose it) and the exporters (which obey it), so
neither layer needs to know the other.
"""
from __future__ import annotations

import dataclasses

from kerascompress.errors import ConfigError

#: Modes a plan may name.
MODES = ("float32", "fp16", "dynamic", "int8", "int16x8", "mixed")


@dataclasses.dataclass(frozen=True)
class PrecisionPlan:
    """The number format a model is to be exported at.

    ``mode``: "float32", "fp16", "dynamic" (int8 weights, float compute), "int8"
    (full integer, float fallback allowed for ``float_layers``), "int16x8" (int16
    activations, int8 weights; integer-only MCUs run it), or "mixed" (per-layer;
    ``layer_precisions`` maps Keras layer name -> "int8" | "fp16" | "fp32").
    ``int8_io``: inputs and outputs are int8 too (required by integer-only targets).
    ``calibration``: how activation ranges are chosen ("minmax", "percentile", "mse").
    """

    mode: str = "float32"
    float_layers: tuple[str, ...] = ()
    layer_precisions: tuple[tuple[str, str], ...] = ()
    int8_io: bool = False
    calibration: str = "minmax"

    @property
    def is_float32(self) -> bool:
        return self.mode == "float32"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"unknown precision mode {self.mode!r}; choose one of {', '.join(MODES)}")

    def describe(self) -> str:
        """A short human-readable summary for reports."""
        text = self.mode
        if self.mode == "int8" and self.float_layers:
            text += f" ({len(self.float_layers)} layers kept in float)"
        if self.mode == "mixed":
            counts: dict[str, int] = {}
            for _, p in self.layer_precisions:
                counts[p] = counts.get(p, 0) + 1
            text += " (" + ", ".join(f"{n} {p}" for p, n in sorted(counts.items())) + ")"
        if self.int8_io:
            text += ", int8 I/O"
        return text
