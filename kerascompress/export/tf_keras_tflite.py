"""A legacy tf_keras (Keras 2) model to TFLite, with the same modes as `to_tflite`.

The Keras 3 exporter traces the layer graph; a tf_keras graph is converted whole with
``TFLiteConverter.from_keras_model``. Nothing here imports tf_keras: a tf_keras model
object already implies it is importable.
"""
from __future__ import annotations

import os
import warnings
from typing import Any, Optional, Union

import numpy as np

from kerascompress.errors import ConfigError
from kerascompress.export.tflite import (
    _check_integer_only,
    _convert,
    _normalize_plan,
    _representative,
    check_fp16_accumulation,
    request_fp16_accumulation,
)
from kerascompress.fileio import write_atomic
from kerascompress.quant.plan import PrecisionPlan


def tf_keras_to_tflite(
    model: Any,
    plan: Union[PrecisionPlan, str] = "float32",
    representative_data: Any = None,
    path: Union[str, os.PathLike, None] = None,
    int8_io: Optional[bool] = None,
    num_samples: int = 200,
    fp16_accumulation: bool = False,
) -> bytes:
    """A tf_keras model to TFLite via ``TFLiteConverter.from_keras_model`` (same modes and options as `to_tflite`).

    The Keras 3 exporter traces the layer graph to keep named layers in float; a tf_keras
    graph is not traced, so per-layer float fallback (``float_layers``, "mixed") and the
    re-calibration methods are refused rather than silently ignored. A QAT model from
    tfmot converts to int8 from its own fake-quant ranges.
    """
    import tensorflow as tf


    mode, plan_obj, io = _normalize_plan(plan, int8_io)
    if plan_obj.float_layers:
        raise ConfigError(
            "keeping named layers in float (float_layers, or a 'mixed' plan) needs a Keras 3 model: the exporter maps "
            "TFLite ops to Keras 3 layers; for a tf_keras model use a whole-model mode (int8, dynamic, fp16)"
        )
    if plan_obj.calibration != "minmax":
        raise ConfigError(
            f"calibration {plan_obj.calibration!r} needs a Keras 3 model; tf_keras models are calibrated with minmax"
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if mode in ("fp16", "dynamic", "int8", "int16x8"):
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode == "fp16":
        converter.target_spec.supported_types = [tf.float16]
        if fp16_accumulation:
            request_fp16_accumulation(converter)
    elif mode in ("int8", "int16x8"):
        names = [str(n) for n in model.input_names]
        dtypes = [np.dtype(getattr(t.dtype, "as_numpy_dtype", t.dtype) or np.float32) for t in model.inputs]
        converter.representative_dataset = _representative(representative_data, names, num_samples, dtypes)
        if mode == "int16x8":
            converter.target_spec.supported_ops = [
                tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
            ]
        elif io:
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
    data = _convert(converter)
    if io:
        _check_integer_only(data, None)
    if mode == "fp16" and fp16_accumulation:
        check_fp16_accumulation(data)
    if path is not None:
        write_atomic(path, data)
    return data
