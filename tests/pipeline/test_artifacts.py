"""Which artifact a target runs, built at the state's precision, run here."""
from __future__ import annotations

import gzip

import keras
import numpy as np
import pytest

import kerascompress as kc
from kerascompress.errors import UnsupportedModelError
from kerascompress.passes.base import ModelState
from kerascompress.pipeline.artifacts import Artifact, artifact_kind, build_artifact
from kerascompress.quant.plan import PrecisionPlan
from kerascompress.runtime.litert import LiteRTModel
from kerascompress.runtime.onnx_runner import OnnxModel
from kerascompress.targets import load


def _mlp() -> keras.Model:
    keras.utils.set_random_seed(0)
    inp = keras.Input((6,))
    return keras.Model(inp, keras.layers.Dense(3)(keras.layers.Dense(8, activation="relu")(inp)))


def test_tensorrt_targets_run_onnx_and_the_rest_tflite():
    assert artifact_kind(load("nvidia-t4-sm75")) == "onnx"
    assert all(artifact_kind(load(n)) == "tflite" for n in ("x86-avx2", "edgetpu", "cortex-m7"))


def test_a_built_artifact_runs_here_and_knows_its_sizes():
    model = _mlp()
    x = np.random.default_rng(0).standard_normal((5, 6)).astype(np.float32)
    tflite = build_artifact(ModelState(model), load("x86-avx2"))
    assert (tflite.kind, tflite.suffix, tflite.precision) == ("tflite", ".tflite", "float32")
    assert tflite.data[4:8] == b"TFL3" and tflite.size_bytes == len(tflite.data)
    assert tflite.gzip_bytes == len(gzip.compress(tflite.data, compresslevel=9))
    assert isinstance(tflite.runner(), LiteRTModel)
    np.testing.assert_allclose(tflite.predict(x), model.predict(x, verbose=0), atol=1e-5)
    assert tflite.weight_summary() is not None

    onnx = build_artifact(ModelState(model, PrecisionPlan("fp16")), load("nvidia-t4-sm75"))
    assert (onnx.kind, onnx.precision) == ("onnx", "fp16") and isinstance(onnx.runner(), OnnxModel)
    np.testing.assert_allclose(onnx.predict(x), model.predict(x, verbose=0), atol=2e-2)
    assert onnx.weight_summary() is None  # read back from TFLite files only


def test_an_artifact_is_what_its_bytes_are():
    art = Artifact("onnx", b"\x00" * 100, "int8")
    assert art.size_bytes == 100 and art.suffix == ".onnx" and art.gzip_bytes < 100


def test_tensorrt_target_refuses_a_tf_keras_model_clearly(legacy_cnn, digits_data, tmp_path) -> None:
    x, y, xt, yt = digits_data
    with pytest.raises(UnsupportedModelError, match="Keras 3 models only"):
        kc.optimize(legacy_cnn, target=load("nvidia-t4-sm75"), data={"train": (x, y), "eval": (xt, yt)},
                    recipe=[kc.passes.Quantize("int8")], output_dir=tmp_path, verbose=False, latency_runs=3)
