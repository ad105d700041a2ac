"""A tf_keras model to TFLite: whole-model modes only, per-layer float fallback refused."""
from __future__ import annotations

import numpy as np
import pytest

from kerascompress.errors import ConfigError
from kerascompress.export.tf_keras_tflite import tf_keras_to_tflite
from kerascompress.quant.plan import PrecisionPlan
from kerascompress.runtime.litert import LiteRTModel


def test_per_layer_and_recalibrating_plans_are_refused_before_converting():
    """Refused from the plan alone: the model is never read (so no tf_keras is needed here)."""
    with pytest.raises(ConfigError, match="Keras 3"):
        tf_keras_to_tflite(object(), PrecisionPlan(mode="int8", float_layers=("fc1",)))
    with pytest.raises(ConfigError, match="calibrated with minmax"):
        tf_keras_to_tflite(object(), PrecisionPlan(mode="int8", calibration="mse"))


def test_float_export_of_a_tf_keras_model_matches_it(legacy_cnn, digits_data):
    x = digits_data[2][:32]
    out = LiteRTModel(tf_keras_to_tflite(legacy_cnn, "float32")).predict(x)
    np.testing.assert_allclose(out, legacy_cnn.predict(x, verbose=0), atol=1e-5)
    with pytest.raises(ConfigError, match="Keras 3"):
        tf_keras_to_tflite(legacy_cnn, PrecisionPlan(mode="int8", float_layers=("fc1",)), x)
