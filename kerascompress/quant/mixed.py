"""Mixed precision: keep the fewest, most sensitive layers out of int8 until the budget holds.

Layers are ranked by `sensitivity.layer_sensitivity`. The search then asks how many of
the top-ranked layers must stay in higher precision for the quantized model to stay
within ``max_drop`` of the float model (accuracy when labels are given, otherwise top-1
agreement with the float model): a binary search over that count (more float layers
never hurt much in practice), then a pass that drops every chosen layer that is not
needed after all. Each candidate is measured on the artifact the target will run where
the caller can build it (``build``: a plan -> something with ``predict``; the Quantize
pass passes its context's `build`, so LiteRT targets are judged on a real int8 TFLite
with float fallback), otherwise on a Keras fake-quant simulation of it.

What "higher precision" means depends on the runtime: LiteRT's converter cannot mix FP16
and INT8 in one model, so it is FP32 fallback there; TensorRT runs per-layer FP16, so
layers left out of int8 are FP16 (FP32 when the target lacks FP16 kernels).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional, Sequence

import keras
import numpy as np

from kerascompress.errors import DataError
from kerascompress.quant import fake_quant as fq
from kerascompress.quant.calibration import DEFAULT_CALIBRATION_SAMPLES
from kerascompress.quant.plan import PrecisionPlan
from kerascompress.quant.sensitivity import (
    LayerSensitivity,
    layer_cost,
    layer_sensitivity,
)
from kerascompress.targets.target import Kernel, Target

Evaluator = Callable[[Sequence[str]], float]


@dataclasses.dataclass
class MixedPlan:
    """The chosen plan and the evidence for it (all JSON-serialisable through `details`)."""

    plan: PrecisionPlan
    high_precision_layers: list[str]
    high_precision: str  # "fp32" or "fp16"
    metric_name: str  # "accuracy" or "top1_agreement"
    float_metric: float
    int8_metric: float
    mixed_metric: float
    budget_met: bool
    sensitivity: list[LayerSensitivity]
    evaluations: list[tuple[list[str], float]]
    bytes_float32: int = 0
    bytes_mixed: int = 0
    int8_mac_fraction: float = 0.0

    def details(self) -> dict[str, Any]:
        return {
            "plan": self.plan.describe(),
            "layer_precisions": dict(self.plan.layer_precisions),
            "kept_in_" + self.high_precision: list(self.high_precision_layers),
            "metric": self.metric_name,
            "float_" + self.metric_name: round(self.float_metric, 5),
            "full_int8_" + self.metric_name: round(self.int8_metric, 5),
            "mixed_" + self.metric_name: round(self.mixed_metric, 5),
            "budget_met": self.budget_met,
            "cost": {"points_lost_vs_float": round((self.float_metric - self.mixed_metric) * 100, 3),
                     "points_recovered_vs_full_int8": round((self.mixed_metric - self.int8_metric) * 100, 3)},
            "savings": {"weight_bytes_float32": self.bytes_float32, "weight_bytes_mixed": self.bytes_mixed,
                        "weight_size_ratio": round(self.bytes_mixed / max(self.bytes_float32, 1), 4),
                        "int8_mac_fraction": round(self.int8_mac_fraction, 4)},
            "sensitivity": [s.to_dict() for s in self.sensitivity],
            "candidates_evaluated": [{"kept": k, self.metric_name: round(m, 5)} for k, m in self.evaluations],
        }


def high_precision_for(target: Target) -> str:
    """What a layer left out of int8 runs in on ``target``."""
    if target.runtime == "tensorrt" and target.kernel("fp16") is not Kernel.NONE:
        return "fp16"
    return "fp32"


def build_plan(target: Target, model: keras.Model, keep: Sequence[str], calibration: str = "minmax",
               int8_io: bool = False) -> PrecisionPlan:
    """The `PrecisionPlan` keeping ``keep`` out of int8 on ``target``.

    LiteRT: mode "int8" with ``float_layers`` (what the TFLite exporter reads) and
    ``layer_precisions`` for the report. TensorRT: mode "mixed" with int8/fp16 per layer.
    """
    high = high_precision_for(target)
    names = fq.quantizable_layers(model)
    keep_set = set(keep)
    precisions = tuple((n, high if n in keep_set else "int8") for n in names)
    if target.runtime == "tensorrt":
        return PrecisionPlan(mode="mixed", layer_precisions=precisions, calibration=calibration)
    return PrecisionPlan(mode="int8", float_layers=tuple(n for n in names if n in keep_set),
                         layer_precisions=precisions, int8_io=int8_io, calibration=calibration)


def metric_of(outputs: np.ndarray, labels: Optional[np.ndarray], reference: np.ndarray) -> float:
    """Accuracy against ``labels`` when given, else top-1 agreement with ``reference``."""
    pred = np.argmax(np.asarray(outputs), axis=-1)
    if labels is not None:
        y = np.asarray(labels)
        y = np.argmax(y, -1) if y.ndim == pred.ndim + 1 else y
        return float(np.mean(pred == y.reshape(pred.shape)))
    return float(np.mean(pred == np.argmax(reference, axis=-1)))


def artifact_evaluator(build: Callable[[PrecisionPlan], Any], model: keras.Model, x_eval: Any,
                       labels: Optional[np.ndarray], reference: np.ndarray, calibration: str = "minmax") -> Evaluator:
    """Metric of the real artifact (int8 with the kept layers in float) that ``build(plan)`` returns."""

    def evaluate(keep: Sequence[str]) -> float:
        plan = PrecisionPlan(mode="int8", float_layers=tuple(keep), calibration=calibration)
        return metric_of(build(plan).predict(x_eval), labels, reference)

    return evaluate


def simulated_evaluator(model: keras.Model, calibration_data: Any, x_eval: Any, labels: Optional[np.ndarray],
                        reference: np.ndarray, calibration: str = "minmax",
                        num_samples: int = DEFAULT_CALIBRATION_SAMPLES) -> Evaluator:
    """Metric of a Keras simulation: every layer not kept is fake-quantized (its kernel,
    inputs and output), as Q/DQ pairs around it would; FP16 rounding is not simulated."""
    names = fq.quantizable_layers(model)
    calib = [a[:num_samples] for a in calibration_data] if isinstance(calibration_data, (list, tuple)) \
        else calibration_data[:num_samples]

    def evaluate(keep: Sequence[str]) -> float:
        int8 = [n for n in names if n not in set(keep)]
        if not int8:
            return metric_of(reference, labels, reference)
        sim = fq.fake_quant_model(model, int8)
        fq.calibrate(sim, calib, calibration)
        return metric_of(fq.predict(sim.model, x_eval), labels, reference)

    return evaluate


def search_mixed_plan(
    model: keras.Model,
    target: Target,
    calibration_data: Any,
    x_eval: Any,
    y_eval: Optional[np.ndarray] = None,
    max_drop: float = 0.01,
    calibration: str = "minmax",
    num_samples: int = DEFAULT_CALIBRATION_SAMPLES,
    sensitivity: Optional[list[LayerSensitivity]] = None,
    evaluate: Optional[Evaluator] = None,
    build: Optional[Callable[[PrecisionPlan], Any]] = None,
    max_evaluations: int = 24,
    progress: Optional[Callable[[str], None]] = None,
) -> MixedPlan:
    """Find the fewest high-precision layers keeping the metric within ``max_drop`` of float.

    ``evaluate(keep) -> metric`` may be given; otherwise LiteRT targets are measured on
    ``build(plan)`` (the real exported artifact) when ``build`` is given, and everything
    else in simulation (TensorRT's per-layer FP16 cannot be run here).
    """
    say = progress or (lambda _m: None)
    if x_eval is None or (len(x_eval[0]) if isinstance(x_eval, (list, tuple)) else len(x_eval)) == 0:
        raise DataError("the mixed-precision search needs evaluation inputs")
    reference = fq.predict(model, x_eval)
    float_metric = metric_of(reference, y_eval, reference)
    if sensitivity is None:
        sensitivity = layer_sensitivity(model, calibration_data, calibration=calibration,
                                        num_samples=num_samples, progress=say)
    order = [s.layer for s in sensitivity]
    if evaluate is None and build is not None and target.runtime == "litert":
        evaluate = artifact_evaluator(build, model, x_eval, y_eval, reference, calibration)
    elif evaluate is None:
        evaluate = simulated_evaluator(model, calibration_data, x_eval, y_eval, reference, calibration, num_samples)

    evaluations: list[tuple[list[str], float]] = []
    cache: dict[tuple[str, ...], float] = {}

    def run(keep: Sequence[str]) -> float:
        key = tuple(sorted(keep))
        if key not in cache:
            cache[key] = float(evaluate(list(keep)))
            evaluations.append((list(keep), cache[key]))
            say(f"mixed precision: {len(keep)} layer(s) kept {list(keep)} -> {cache[key]:.4f}")
        return cache[key]

    def ok(metric: float) -> bool:
        return float_metric - metric <= max_drop + 1e-12

    int8_metric = run([])
    if ok(int8_metric) or not order:
        keep: list[str] = []
    else:
        lo, hi = 0, len(order)  # lo fails; hi = everything kept (assumed to pass)
        while hi - lo > 1 and len(evaluations) < max_evaluations:
            mid = (lo + hi) // 2
            if ok(run(order[:mid])):
                hi = mid
            else:
                lo = mid
        keep = list(order[:hi])
        # Drop the chosen layers that are not needed after all, least sensitive first.
        for name in reversed(list(keep)):
            if len(keep) <= 1 or len(evaluations) >= max_evaluations:
                break
            trial = [n for n in keep if n != name]
            if ok(run(trial)):
                keep = trial
    mixed_metric = run(keep) if keep else int8_metric
    plan = build_plan(target, model, keep, calibration)
    high = high_precision_for(target)
    b32, bmix, mac_int8, mac_all = 0, 0, 0, 0
    keep_set = set(keep)
    for name in fq.quantizable_layers(model):
        params, macs = layer_cost(model.get_layer(name))
        b32 += 4 * params
        bmix += params * ((2 if high == "fp16" else 4) if name in keep_set else 1)
        mac_all += macs
        mac_int8 += 0 if name in keep_set else macs
    return MixedPlan(
        plan=plan,
        high_precision_layers=keep,
        high_precision=high,
        metric_name="accuracy" if y_eval is not None else "top1_agreement",
        float_metric=float_metric,
        int8_metric=int8_metric,
        mixed_metric=mixed_metric,
        budget_met=ok(mixed_metric),
        sensitivity=sensitivity,
        evaluations=evaluations,
        bytes_float32=b32,
        bytes_mixed=bmix,
        int8_mac_fraction=mac_int8 / mac_all if mac_all else 0.0,
    )
