"""`Quantize`: choose the number format the model is exported at, if the target can use it.

Quantization changes no Keras weights here: it sets the state's `PrecisionPlan`, which
the exporters obey. What it may buy depends on the target's kernels: FP16 on a CPU
that computes in FP32 is storage only; an integer-only accelerator accepts nothing but
a full-integer model with int8 input and output.
"""
from __future__ import annotations

from typing import Optional, Sequence

from kerascompress.errors import ConfigError, DataError
from kerascompress.models.kinds import is_tf_keras_model
from kerascompress.passes.base import Gate, ModelState, Pass, PassContext, PassOutput
from kerascompress.quant.calibration import check_method
from kerascompress.quant.mixed import high_precision_for, search_mixed_plan
from kerascompress.quant.plan import PrecisionPlan
from kerascompress.targets.target import Kernel, Target

#: Which target precision each mode's speed depends on.
_KERNEL_OF_MODE = {"fp16": "fp16", "dynamic": "int8", "int8": "int8", "int16x8": "int16x8", "mixed": "int8"}


class Quantize(Pass):
    """Export at ``mode`` = "int8" (full integer), "int16x8" (int16 activations, int8
    weights), "dynamic" (int8 weights, float compute), "fp16" or "mixed" (per layer).

    ``float_layers`` keeps the named Keras layers in float inside an int8 model (not
    allowed on integer-only targets). ``int8_io`` forces int8 inputs/outputs; by default
    they are int8 exactly when the target requires a full-integer model.

    "mixed" searches per-layer precision (`passes.mixed_precision`): the fewest, most
    sensitive layers stay out of int8 until the metric is within ``max_accuracy_drop``
    (default: the driver's constraint, else one point) of float. ``num_samples``
    calibration inputs set the ranges (``calibration``: minmax, percentile or mse);
    ``search_samples`` inputs (training data after the calibration ones) judge each
    candidate plan.
    """

    name = "quantize"
    tf_keras_unsupported = None  # tf_keras models: whole-model modes only (see gate)

    def __init__(
        self,
        mode: str = "int8",
        float_layers: Sequence[str] = (),
        int8_io: Optional[bool] = None,
        calibration: str = "minmax",
        max_accuracy_drop: Optional[float] = None,
        num_samples: int = 256,
        search_samples: int = 500,
    ) -> None:
        check_method(calibration)
        if mode not in _KERNEL_OF_MODE:
            raise ConfigError(f"Quantize mode must be one of {sorted(_KERNEL_OF_MODE)}, got {mode!r}")
        self.mode = mode
        self.float_layers = tuple(float_layers)
        self.int8_io = int8_io
        self.calibration = calibration
        self.max_accuracy_drop = max_accuracy_drop
        self.num_samples = int(num_samples)
        self.search_samples = int(search_samples)
        self.name = f"quantize:{mode}"

    @property
    def needs_data(self) -> bool:  # type: ignore[override]
        return self.mode in ("int8", "int16x8", "mixed")

    @property
    def needs_layer_graph(self) -> bool:  # type: ignore[override]
        return self.mode == "mixed" or bool(self.float_layers)  # per-layer choices name layers of the graph

    def gate(self, target: Target, state: ModelState) -> Gate:
        if not state.precision.is_float32:
            return Gate.refuse(f"the model is already exported as {state.precision.describe()} by an earlier pass")
        legacy = _tf_keras_refusal(self, state)
        if legacy:
            return Gate.refuse(legacy)
        if target.full_integer_only and self.mode not in ("int8", "int16x8"):
            return Gate.refuse(
                f"{target.name} runs only full-integer models (int8 in and out); {self.mode} keeps float compute"
            )
        if target.full_integer_only and self.float_layers:
            return Gate.refuse(f"{target.name} has no float fallback; cannot keep {list(self.float_layers)} in float")
        if self.mode == "dynamic" and target.runtime == "tensorrt":
            return Gate.refuse("TensorRT has no weight-only (dynamic range) int8 mode; use int8 (Q/DQ) or fp16")
        precision = _KERNEL_OF_MODE[self.mode]
        kernel = target.kernel(precision)
        source = target.source(f"precisions.{precision}")
        cite = f" (source: {source})" if source else ""
        if kernel is Kernel.NONE:
            return Gate.refuse(f"{target.name} has no {precision} kernels{cite}")
        if self.mode == "dynamic":
            return Gate.allow(
                "size",
                f"dynamic range: int8 weights, float activations; size only unless {target.name}'s runtime has hybrid kernels",
            )
        if kernel is Kernel.STORAGE:
            how = (
                ": the converter's FP16 model asks for FP32 accumulation (fp16accfp32), so the runtime dequantizes "
                "the weights and computes in FP32"
                if self.mode == "fp16" and target.runtime == "litert" else ": computed in a wider format"
            )
            return Gate.allow(
                "size",
                f"{precision} is storage-only on {target.name}{how}; it halves or quarters the file but buys no "
                f"speed{cite}",
            )
        if self.mode == "fp16":
            return Gate.allow("size+latency", _fp16_compute(target) + cite)
        if self.mode == "mixed":
            high = high_precision_for(target)
            return Gate.allow(
                "size+latency",
                f"{target.name} has fast int8 kernels{cite}; layers the budget needs stay in {high}"
                + (" (the LiteRT converter cannot mix fp16 and int8)" if target.runtime == "litert" else ""),
            )
        return Gate.allow("size+latency", f"{target.name} has fast {precision} kernels{cite}")

    def apply(self, state: ModelState, ctx: PassContext) -> PassOutput:
        if self.mode == "mixed":
            return self._apply_mixed(state, ctx)
        int8_io = ctx.target.full_integer_only if self.int8_io is None else self.int8_io
        mode = "float32" if self.mode == "float32" else self.mode
        plan = PrecisionPlan(
            mode=mode,
            float_layers=self.float_layers if mode == "int8" else (),
            int8_io=bool(int8_io) and mode == "int8",
            calibration=self.calibration,
        )
        return PassOutput(state.replace(precision=plan), {"plan": plan.describe()})

    def _apply_mixed(self, state: ModelState, ctx: PassContext) -> PassOutput:
        if ctx.data is None:
            raise DataError("a mixed-precision plan needs calibration and evaluation data: pass data=(x, y)")
        budget = self.max_accuracy_drop
        if budget is None:
            constraints = getattr(ctx, "constraints", None)
            budget = getattr(constraints, "max_accuracy_drop", 0.01) if constraints is not None else 0.01
        calib = ctx.data.calibration(self.num_samples)
        x_eval, y_eval = ctx.data.selection(self.search_samples)
        result = search_mixed_plan(
            state.model, ctx.target, calib, x_eval, y_eval, max_drop=budget, calibration=self.calibration,
            num_samples=self.num_samples, progress=ctx.progress,
            build=lambda plan: ctx.build(state.replace(precision=plan)),
        )
        plan = result.plan  # the gate keeps integer-only targets (no float fallback) out of here
        details = result.details()
        details["budget_points"] = round(budget * 100, 3)
        return PassOutput(state.replace(precision=plan), details)


def _fp16_compute(target: Target) -> str:
    """Why FP16 buys latency on ``target``: what really computes in FP16, and where accuracy is measured."""
    if target.runtime == "tensorrt":
        return (f"{target.name} computes FP16 natively: TensorRT builds FP16 kernels for the float16 tensors of the "
                "ONNX (strongly typed; on TensorRT 8.x the kit adds --fp16)")
    text = (f"{target.name} computes FP16 natively: the export asks for FP16 accumulation "
            "(reduced_precision_support=fp16accfp16), which XNNPACK needs to run FP16 instead of FP32")
    why_not = target.why_not_here()
    if why_not:
        text += (f"; accuracy here is measured with FP32 arithmetic ({why_not}), so FP16-accumulation error shows "
                 "only on the device: validate there")
    return text


def _tf_keras_refusal(p: Quantize, state: ModelState) -> Optional[str]:
    """Why this Quantize cannot run on a tf_keras model, or None (per-layer choices need Keras 3)."""
    if state.model is None or not is_tf_keras_model(state.model):
        return None
    if p.mode == "mixed" or p.float_layers:
        return ("per-layer precision (mode 'mixed' or float_layers) needs a Keras 3 model: the exporter maps TFLite "
                "ops to Keras 3 layers; a tf_keras model is quantized whole (int8, dynamic, fp16)")
    if p.calibration != "minmax":
        return f"calibration {p.calibration!r} needs a Keras 3 model; tf_keras models are calibrated with minmax"
    return None
