"""`Sparsity`: magnitude pruning of individual weights, unstructured or N:M (2:4).

Zeros keep the tensor's shape, so the file's raw size and a dense runtime's latency do
not change; gzip shrinks the file. Only NVIDIA sparse tensor cores (compute capability
>= 8.0, used by TensorRT when the engine is built with sparse weights enabled) turn
2:4 sparsity into speed, and they need the pattern along the reduction (input
channel) dimension: in every group of 4 consecutive input weights feeding one output,
at least 2 are zero. For a Keras kernel that is axis -2 of a Dense/Conv kernel
(..., in, out); TensorRT sees the same groups after it lays the kernel out as
(out, kh, kw, in).
"""
from __future__ import annotations

import re
from typing import Any, Optional

import keras
import numpy as np

from kerascompress.errors import ConfigError
from kerascompress.legacy.tfmot import sparsity_tf_keras
from kerascompress.models.copy import copy_model
from kerascompress.passes.base import Gate, ModelState, PassContext, PassOutput
from kerascompress.passes.weight_constraint import WeightConstraintPass
from kerascompress.targets.target import Target
from kerascompress.training.constrained import MaskConstraint, finetune_from_context

SCHEDULES = ("oneshot", "polynomial")

#: Layer types whose kernels are sparsified; N:M applies where the kernel reduces over input channels.
_KERNEL_ATTRS = {
    "Dense": ("kernel",),
    "Conv1D": ("kernel",),
    "Conv2D": ("kernel",),
    "Conv3D": ("kernel",),
    "SeparableConv1D": ("pointwise_kernel",),
    "SeparableConv2D": ("pointwise_kernel",),
    "DepthwiseConv2D": ("kernel",),
    "Conv2DTranspose": ("kernel",),
}
#: Kernels without an input-channel reduction for sparse tensor cores (unstructured only).
_NO_NM = ("DepthwiseConv2D", "Conv2DTranspose")


def parse_pattern(pattern: str) -> Optional[tuple[int, int]]:
    """(n, m) for an "n:m" pattern (at most n non-zeros in every m), None for "unstructured"."""
    if pattern == "unstructured":
        return None
    match = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", str(pattern))
    if not match:
        raise ConfigError(f"Sparsity pattern must be 'unstructured' or 'N:M' such as '2:4', got {pattern!r}")
    n, m = int(match.group(1)), int(match.group(2))
    if not 0 < n < m:
        raise ConfigError(f"Sparsity pattern {pattern!r}: need 0 < N < M")
    return n, m


def unstructured_mask(kernel: np.ndarray, sparsity: float) -> np.ndarray:
    """Mask zeroing exactly round(sparsity x size) weights of smallest magnitude."""
    flat = np.abs(np.asarray(kernel, np.float32)).reshape(-1)
    n_zero = int(round(float(sparsity) * flat.size))
    mask = np.ones(flat.size, np.float32)
    if n_zero > 0:
        mask[np.argsort(flat, kind="stable")[:n_zero]] = 0.0
    return mask.reshape(np.shape(kernel))


def nm_mask(kernel: np.ndarray, n: int, m: int, axis: int = -2, zeros_per_group: Optional[int] = None) -> np.ndarray:
    """Mask keeping the ``n`` largest-magnitude weights in every ``m`` consecutive along ``axis``.

    ``zeros_per_group`` (default m - n) lets a schedule approach the pattern gradually.
    The axis length must be a multiple of ``m``.
    """
    kernel = np.asarray(kernel, np.float32)
    axis = axis % kernel.ndim
    if kernel.shape[axis] % m:
        raise ValueError(f"axis {axis} has {kernel.shape[axis]} entries, not a multiple of {m}")
    z = (m - n) if zeros_per_group is None else int(zeros_per_group)
    moved = np.moveaxis(np.abs(kernel), axis, -1)
    groups = moved.reshape(-1, m)
    mask = np.ones(groups.shape, np.float32)
    if z > 0:
        smallest = np.argsort(groups, axis=1, kind="stable")[:, :z]
        np.put_along_axis(mask, smallest, 0.0, axis=1)
    return np.moveaxis(mask.reshape(moved.shape), -1, axis)


def satisfies_nm(kernel: np.ndarray, n: int, m: int, axis: int = -2) -> bool:
    """True when every group of ``m`` consecutive weights along ``axis`` has at most ``n`` non-zeros."""
    kernel = np.asarray(kernel)
    axis = axis % kernel.ndim
    if kernel.shape[axis] % m:
        return False
    groups = np.moveaxis(kernel, axis, -1).reshape(-1, m)
    return bool(((groups != 0).sum(axis=1) <= n).all())


def polynomial_fraction(step: int, total: int, ramp: float = 0.6, exponent: int = 3) -> float:
    """Fraction of the final sparsity reached at ``step``: 1 - (1 - t)^3 over the first ``ramp`` of training.

    Pruning fast early and slowly late (Zhu & Gupta, 2017) lets the network recover
    between mask updates; the last part of fine-tuning runs at the final mask.
    """
    end = max(1, int(total * ramp))
    t = min(1.0, step / end)
    return 1.0 - (1.0 - t) ** exponent


class Sparsity(WeightConstraintPass):
    """Magnitude sparsity: ``pattern`` = "2:4" (any "N:M") or "unstructured" at ``sparsity``.

    ``schedule``: "oneshot" prunes to the final mask before fine-tuning; "polynomial"
    starts fine-tuning at ``initial_sparsity`` and tightens the mask every
    ``update_every`` steps (or ten times over the ramp) to the final one. Fine-tuning
    keeps the masked weights exactly zero. For N:M, kernels whose input-channel count
    is not a multiple of M (e.g. a 3-channel stem) and depthwise kernels are left dense
    and listed in the details. The skip and training settings are those of
    `WeightConstraintPass`.
    """

    name = "sparsity"
    kernel_attrs = _KERNEL_ATTRS

    def __init__(
        self,
        pattern: str = "2:4",
        sparsity: float = 0.5,
        schedule: str = "oneshot",
        initial_sparsity: float = 0.0,
        update_every: Optional[int] = None,
        **settings: Any,
    ) -> None:
        nm = parse_pattern(pattern)
        if schedule not in SCHEDULES:
            raise ConfigError(f"Sparsity schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
        if nm is None and not 0.0 < float(sparsity) < 1.0:
            raise ConfigError(f"Sparsity: sparsity must be in (0, 1), got {sparsity}")
        super().__init__(**settings)
        self.pattern = "unstructured" if nm is None else f"{nm[0]}:{nm[1]}"
        self.sparsity = float(sparsity) if nm is None else 1.0 - nm[0] / nm[1]
        self.schedule = schedule
        self.initial_sparsity = float(initial_sparsity)
        self.update_every = update_every
        self._nm = nm
        self.name = f"sparsity:{self.pattern}" if nm else f"sparsity:{self.sparsity:g}"

    def gate(self, target: Target, state: ModelState) -> Gate:
        if self._nm is None:
            source = target.source("unstructured_sparsity")
            cite = f" (source: {source})" if source else ""
            if target.supports("unstructured_sparsity"):
                return Gate.allow("size+latency", f"{target.name}'s runtime has sparse kernels for unstructured zeros{cite}")
            return Gate.allow("compressed-size", f"compressed (gzip) size only: {target.name}'s runtime computes dense{cite}")
        source = target.source("sparse_2_4")
        cite = f" (source: {source})" if source else ""
        cc = target.compute_capability
        fast = (
            self._nm == (2, 4)
            and target.supports("sparse_2_4")
            and target.runtime == "tensorrt"
            and (cc is None or cc >= 8.0)
        )
        if fast:
            return Gate.allow(
                "size+latency",
                f"{target.name} has 2:4 sparse tensor cores (compute capability {cc}); TensorRT uses them when the "
                f"engine is built with sparse weights enabled{cite}",
            )
        if self._nm == (2, 4) and target.supports("sparse_2_4"):
            why = (f"the profile claims 2:4 support but compute capability {cc} < 8.0" if cc is not None and cc < 8.0
                   else f"its runtime is {target.runtime}, not TensorRT")
        elif self._nm != (2, 4):
            why = f"only 2:4 has sparse tensor-core kernels, not {self.pattern}"
        elif cc is not None:
            why = f"compute capability {cc} has no sparse tensor cores (they need >= 8.0)"
        else:
            why = "no sparse kernels"
        return Gate.allow(
            "compressed-size",
            f"compressed (gzip) size only: {target.name}'s runtime computes dense ({why}); no latency or raw-size "
            f"gain{cite}",
        )

    def apply_keras(self, state: ModelState, ctx: PassContext) -> PassOutput:
        model = copy_model(state.model)
        kernels = self.kernels(model)
        skip = self.skipped(kernels)
        gradual = self.schedule == "polynomial" and self.finetune_epochs > 0 and ctx.data is not None and ctx.data.can_train
        layers_out: dict[str, Any] = {}
        constraints = []
        looks_clustered: list[str] = []
        for layer, attr, var in kernels:
            key = f"{layer.name}.{attr}"
            if key in skip:
                layers_out[key] = {"sparse": False, "reason": skip[key]}
                continue
            value = keras.ops.convert_to_numpy(var)
            if np.unique(value).size <= 256:
                looks_clustered.append(key)
            start = self.initial_sparsity if gradual else self.sparsity
            mask = self._mask(value, start)
            var.assign(value * mask)
            constraints.append(MaskConstraint(var, mask, self._schedule_fn() if gradual else None))
            layers_out[key] = {"sparse": True, "shape": list(value.shape)}
        ft = finetune_from_context(model, constraints, ctx, self.finetune_epochs, self, ctx.fine_tuning(model))
        zeros = total = 0
        for layer, attr, var in kernels:
            key = f"{layer.name}.{attr}"
            value = keras.ops.convert_to_numpy(var)
            zeros += int((value == 0).sum())
            total += value.size
            if layers_out[key].get("sparse"):
                layers_out[key]["sparsity"] = float(np.mean(value == 0))
                if self._nm:
                    layers_out[key]["pattern_ok"] = satisfies_nm(value, *self._nm, axis=-2)
        details: dict[str, Any] = {
            "pattern": self.pattern,
            "target_sparsity": self.sparsity,
            "schedule": self.schedule if gradual else "oneshot",
            "kernels_sparse": sum(1 for v in layers_out.values() if v.get("sparse")),
            "kernels_dense": sum(1 for v in layers_out.values() if not v.get("sparse")),
            "sparsity_over_all_kernels": zeros / total if total else 0.0,
            "layers": layers_out,
            "finetune": ft.to_dict() if ft else None,
            "does_not_buy": _does_not_buy(self, ctx.target),
        }
        if self._nm == (2, 4):
            details["nm_axis"] = "input channels (kernel axis -2): groups of 4 consecutive inputs per output"
            details["tensorrt_note"] = (
                "build the engine with sparse weights enabled (trtexec --sparsity=enable / BuilderFlag.SPARSE_WEIGHTS) "
                "so TensorRT picks sparse tensor-core tactics for these layers"
            )
        if self.schedule == "polynomial" and not gradual:
            details["schedule_note"] = "polynomial schedule needs fine-tuning with labels; pruned one-shot instead"
        if self.finetune_epochs > 0 and ft is None:
            details["finetune_skipped"] = "no labelled training data in the pipeline"
        if ft is not None and looks_clustered:
            details["clusters_note"] = (
                f"{len(looks_clustered)} kernel(s) looked clustered (<= 256 values) before this pass; fine-tuning "
                f"under masks moves their weights off the centroids. Put Sparsity before Cluster (Cluster keeps "
                f"exact zeros)"
            )
        return PassOutput(state.replace(model=model), details)


    def apply_tfmot(self, state: ModelState, ctx: PassContext) -> PassOutput:
        """A tf_keras (Keras 2) model: tfmot's pruning (with ``sparsity_m_by_n`` for 2:4)."""
        x, y = self.tfmot_data(ctx)
        model, details = sparsity_tf_keras(state.model, self._nm, self.sparsity, x, y, self.finetune_epochs,
                                           self.batch_size, self.learning_rate)
        details["does_not_buy"] = _does_not_buy(self, ctx.target)
        return PassOutput(state.replace(model=model), details)

    # ----------------------------------------------------------------- helpers

    def _mask(self, kernel: np.ndarray, sparsity: float) -> np.ndarray:
        if self._nm is None:
            return unstructured_mask(kernel, sparsity)
        n, m = self._nm
        zeros = int(round(sparsity / self.sparsity * (m - n))) if self.sparsity else 0
        return nm_mask(kernel, n, m, axis=-2, zeros_per_group=min(m - n, zeros))

    def _schedule_fn(self) -> Any:
        every = self.update_every

        def schedule(kernel: np.ndarray, step: int, total: int) -> Optional[np.ndarray]:
            period = every or max(1, int(total * 0.6) // 10)
            if step != total and step % period:
                return None
            s = self.initial_sparsity + (self.sparsity - self.initial_sparsity) * polynomial_fraction(step, total)
            return self._mask(kernel, s)

        return schedule

    def ineligible(self, layer: Any, shape: tuple[int, ...]) -> Optional[str]:
        if self._nm and type(layer).__name__ in _NO_NM:
            return f"{type(layer).__name__} has no input-channel reduction for {self.pattern} sparse kernels"
        if self._nm and shape[-2] % self._nm[1]:
            return f"{shape[-2]} input channels is not a multiple of {self._nm[1]}"
        return None


def _does_not_buy(p: Sparsity, target: Target) -> str:
    gate = p.gate(target, ModelState(model=None))  # type: ignore[arg-type]
    if gate.benefit == "size+latency":
        return "raw size in the LiteRT/ONNX file: zeros are still stored (TensorRT compresses 2:4 weights in the engine)"
    return (
        f"raw file size and latency: zeros are stored and computed densely by {target.name}'s runtime "
        f"({target.runtime}); the gain is in the compressed (gzip) artifact only"
    )
