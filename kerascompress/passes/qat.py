"""`QuantizationAwareTraining`: fine-tune with int8 rounding in the loop, then export int8.

Post-training int8 rounds weights and activations the network never saw in training;
when that costs more than the budget, training a few epochs *through* the rounding lets
the weights adapt. The fake quantization is placed exactly where the TFLite converter
quantizes (`kerascompress.graph.fake_quant`): per-channel symmetric Conv2D kernels,
per-tensor asymmetric activations after folded BatchNormalization and fused ReLU. The
converter reads the fake-quant ops as the quantization parameters, so the int8 TFLite
computes what the fine-tuned model computes.

Used by the default recipes after ``Quantize(mode="int8")``: when post-training int8
met the budget the state is already int8 and this pass's gate refuses; when the driver
rolled it back, the state is float and QAT runs (if labelled data or a teacher is there).
"""
from __future__ import annotations

from typing import Any, Optional

from kerascompress.data.samples import take
from kerascompress.errors import DataError
from kerascompress.legacy.tfmot import qat_tf_keras
from kerascompress.models.copy import copy_model
from kerascompress.models.kinds import is_tf_keras_model
from kerascompress.passes.base import Gate, ModelState, Pass, PassContext, PassOutput
from kerascompress.quant import fake_quant as fq
from kerascompress.quant.calibration import DEFAULT_CALIBRATION_SAMPLES, check_method
from kerascompress.quant.plan import PrecisionPlan
from kerascompress.targets.target import Kernel, Target
from kerascompress.training.finetune import finetune


class QuantizationAwareTraining(Pass):
    """Fake-quantize the whole model, calibrate, fine-tune ``epochs``, export as full int8.

    ``distill``: learn from the original model's outputs too (the driver's teacher),
    which helps when labels are few. ``max_train_samples`` caps each epoch.
    """

    name = "qat"
    tf_keras_unsupported = None  # tf_keras models: see apply()
    needs_data = True

    def __init__(
        self,
        epochs: int = 2,
        learning_rate: float = 1e-4,
        batch_size: int = 64,
        calibration: str = "minmax",
        num_samples: int = DEFAULT_CALIBRATION_SAMPLES,
        distill: bool = True,
        max_train_samples: Optional[int] = None,
    ) -> None:
        self.epochs = int(epochs)
        self.learning_rate = float(learning_rate)
        self.batch_size = int(batch_size)
        self.calibration = check_method(calibration)
        self.num_samples = int(num_samples)
        self.distill = bool(distill)
        self.max_train_samples = max_train_samples

    def gate(self, target: Target, state: ModelState) -> Gate:
        if not state.precision.is_float32:
            return Gate.refuse(
                f"the model is already exported as {state.precision.describe()} by an earlier pass "
                "(post-training quantization met the budget, or another precision was chosen)"
            )
        kernel = target.kernel("int8")
        source = target.source("precisions.int8")
        cite = f" (source: {source})" if source else ""
        if kernel is Kernel.NONE:
            return Gate.refuse(f"{target.name} has no int8 kernels{cite}")
        if target.runtime != "litert":
            return Gate.refuse(
                f"QAT export is implemented for LiteRT; {target.name} runs {target.runtime} (its ONNX Q/DQ can be "
                "written from the QAT ranges with qat.activation_ranges(), not wired up yet)"
            )
        benefit = "size+latency" if kernel is Kernel.FAST else "size"
        return Gate.allow(benefit, f"int8 with fine-tuned rounding on {target.name}{cite}")

    @property
    def needs_labels(self) -> bool:  # type: ignore[override]
        return not self.distill

    def apply(self, state: ModelState, ctx: PassContext) -> PassOutput:
        if is_tf_keras_model(state.model):
            return self._apply_tfmot(state, ctx)

        if ctx.data is None:
            raise DataError("quantization-aware training needs training data: pass data=(x, y)")
        x_train, y_train = ctx.data.x_train, ctx.data.y_train
        n_train = len(x_train[0]) if isinstance(x_train, (list, tuple)) else len(x_train)
        teacher = (ctx.teacher or state.model) if self.distill else None
        if n_train == 0 or (y_train is None and teacher is None):
            raise DataError("quantization-aware training needs training inputs with labels, or distill=True")
        model = quantization_aware_model(copy_model(state.model), ctx.data.calibration(self.num_samples),
                                         self.calibration)
        ctx.progress(f"qat: {len(model.activation_quantizers)} activation quantizers, "
                     f"{len(model.quantized_layers)} int8 layers; fine-tuning {self.epochs} epoch(s)")
        trained = finetune(
            model.model,
            ctx.data,  # its training part: a stream stays a stream
            epochs=self.epochs,
            teacher=teacher,
            batch_size=self.batch_size,
            learning_rate=self.learning_rate,
            max_samples=self.max_train_samples,
            progress=ctx.progress,
            seed=ctx.seed,
            **ctx.fine_tuning(model.model, mixed_precision=None),  # fake quantization computes in float32
        )
        plan = PrecisionPlan(mode="int8", int8_io=ctx.target.full_integer_only, calibration=self.calibration)
        details = {
            "plan": plan.describe(),
            "int8_layers": model.quantized_layers,
            "activation_quantizers": len(model.activation_quantizers),
            "epochs": self.epochs,
            "calibration": self.calibration,
            "distilled": teacher is not None,
        }
        return PassOutput(state.replace(model=trained, precision=plan), details)

    def _apply_tfmot(self, state: ModelState, ctx: PassContext) -> PassOutput:
        """A tf_keras (Keras 2) model: tfmot's ``quantize_model``, fine-tuned on labels (no distillation)."""

        data = ctx.data
        if data is None or not data.can_train or data.y_train is None:
            raise DataError("quantization-aware training of a tf_keras model through tfmot needs labelled data (x, y)")
        x, y = data.x_train, data.y_train
        if self.max_train_samples is not None:
            x, y = take(x, self.max_train_samples), y[: self.max_train_samples]
        ctx.progress(f"qat: tfmot quantize_model; fine-tuning {self.epochs} epoch(s)")
        model, details = qat_tf_keras(state.model, x, y, self.epochs, self.batch_size, self.learning_rate)
        plan = PrecisionPlan(mode="int8", int8_io=ctx.target.full_integer_only)
        details.update({"plan": plan.describe(), "calibration": "fake-quant ranges learned in training",
                        "distilled": False})
        return PassOutput(state.replace(model=model, precision=plan), details)


def quantization_aware_model(model: Any, calibration_data: Any, calibration: str = "minmax") -> fq.FakeQuantModel:
    """``model`` rebuilt with fake quantization everywhere the converter quantizes, ranges calibrated.

    Layers that are not rebuilt (e.g. DepthwiseConv2D, unfolded BatchNormalization) are
    shared with ``model``: pass a copy if ``model`` must stay untouched by training.
    """
    result = fq.fake_quant_model(model, name=f"{model.name}_qat")
    fq.calibrate(result, calibration_data, calibration)
    return result


def activation_ranges(model: Any) -> dict[str, tuple[float, float]]:
    """(min, max) of every fake-quantized activation, keyed by the quantizer's layer name."""
    return {layer.name: layer.get_range() for layer in model.layers if isinstance(layer, fq.FakeQuant)}


