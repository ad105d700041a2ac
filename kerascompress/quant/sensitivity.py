"""Per-layer quantization sensitivity: how much the output moves when one layer is int8.

For each layer we rebuild the model with only that layer fake-quantized the way the
TFLite converter would quantize it (its kernel per output channel, its input and its
fused output per tensor, BatchNormalization folded, ReLU fused), calibrate the ranges on
calibration data and compare the outputs with the float model's. The result is keyed by
the Keras layer name, because the rebuilt model keeps every layer's name.

Simulating in Keras (rather than reading the TFLite QuantizationDebugger's per-tensor
statistics) answers the question "this layer alone in int8" directly and needs no
mapping from converter tensor names back to layers.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional, Sequence

import keras
import numpy as np

from kerascompress.data.samples import n_samples, take
from kerascompress.errors import DataError
from kerascompress.quant import fake_quant as fq
from kerascompress.quant.calibration import DEFAULT_CALIBRATION_SAMPLES, check_method


@dataclasses.dataclass(frozen=True)
class LayerSensitivity:
    """The output error caused by quantizing one layer alone.

    ``error``: mean squared output difference divided by the float output's variance
    (0 = no change, 1 = as large as the signal). ``disagreement``: fraction of samples
    whose top-1 class changes (for classifiers). ``params``/``macs`` say what keeping the
    layer in float costs.
    """

    layer: str
    error: float
    disagreement: float
    params: int
    macs: int

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def layer_cost(layer: Any) -> tuple[int, int]:
    """(parameters, multiply-accumulates per sample) of one layer call."""
    params = int(sum(int(np.prod(w.shape)) for w in layer.weights))
    kernel = getattr(layer, "kernel", None)
    if kernel is None:
        return params, 0
    try:
        out_shape = tuple(layer.output.shape[1:-1])
    except Exception:  # shared layer with several output shapes
        out_shape = ()
    positions = int(np.prod([d or 1 for d in out_shape])) if out_shape else 1
    return params, int(np.prod(kernel.shape)) * positions


def output_error(reference: np.ndarray, output: np.ndarray) -> tuple[float, float]:
    """(normalised MSE, top-1 disagreement) of ``output`` against ``reference``."""
    ref = np.asarray(reference, np.float64)
    out = np.asarray(output, np.float64)
    err = float(np.mean((out - ref) ** 2) / max(float(np.var(ref)), 1e-12))
    dis = float(np.mean(np.argmax(out, -1) != np.argmax(ref, -1))) if ref.ndim >= 2 and ref.shape[-1] > 1 else 0.0
    return err, dis


def layer_sensitivity(
    model: keras.Model,
    calibration_data: Any,
    layers: Optional[Sequence[str]] = None,
    eval_data: Any = None,
    calibration: str = "minmax",
    num_samples: int = DEFAULT_CALIBRATION_SAMPLES,
    progress: Optional[Callable[[str], None]] = None,
) -> list[LayerSensitivity]:
    """Sensitivity of each layer (default: every Conv2D/Dense/weighted layer), most sensitive first.

    ``calibration_data``: typical inputs; the first ``num_samples`` set the ranges.
    ``eval_data``: inputs the error is measured on (default: the calibration inputs).
    """
    check_method(calibration)
    calib = take(calibration_data, num_samples)
    if n_samples(calib) == 0:
        raise DataError("sensitivity analysis needs calibration inputs; got none")
    x_eval = calib if eval_data is None else eval_data
    names = list(layers) if layers is not None else fq.quantizable_layers(model)
    reference = fq.predict(model, x_eval)
    result = []
    for name in names:
        fqm = fq.fake_quant_model(model, [name])
        fq.calibrate(fqm, calib, calibration)
        err, dis = output_error(reference, fq.predict(fqm.model, x_eval))
        params, macs = layer_cost(model.get_layer(name))
        result.append(LayerSensitivity(name, err, dis, params, macs))
        if progress:
            progress(f"sensitivity {name}: error {err:.3g}, top-1 changed {dis:.2%}")
        del fqm
    result.sort(key=lambda s: (-s.error, -s.disagreement, s.layer))
    return result


