"""`kc.optimize` on a legacy tf_keras (Keras 2) model: same driver and report, tfmot behind Cluster/Sparsity/QAT.

Needs tf-keras and tensorflow-model-optimization, which need the full `tensorflow` wheel
(not tensorflow-cpu): skipped where they are not installed.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

_HOW = "pip install 'kerascompress[tfmot]' (needs the full tensorflow wheel, not tensorflow-cpu)"
pytest.importorskip("tf_keras", reason=f"tf_keras not installed: {_HOW}")
pytest.importorskip("tensorflow_model_optimization", reason=f"tensorflow-model-optimization not installed: {_HOW}")

import kerascompress as kc  # noqa: E402
from kerascompress.errors import ConfigError  # noqa: E402
from kerascompress.export.tflite_inspect import tflite_kernel_stats  # noqa: E402
from kerascompress.models.copy import copy_model  # noqa: E402
from kerascompress.models.io import weights_digest  # noqa: E402
from kerascompress.passes.cluster import Cluster  # noqa: E402
from kerascompress.passes.lowrank import LowRank  # noqa: E402
from kerascompress.passes.pruning import ChannelPruning  # noqa: E402
from kerascompress.passes.qat import QuantizationAwareTraining  # noqa: E402
from kerascompress.passes.quantize import Quantize  # noqa: E402
from kerascompress.passes.sparsity import Sparsity  # noqa: E402
from kerascompress.pipeline.types import Constraints  # noqa: E402
from kerascompress.quant.plan import PrecisionPlan  # noqa: E402
from kerascompress.targets import load  # noqa: E402

BUDGET = Constraints(max_accuracy_drop=0.03, max_slowdown=100.0)


@pytest.fixture(scope="module")
def legacy_cnn(digits_data):
    """A tf_keras CNN trained on digits to ~95% (a few seconds)."""
    import tf_keras

    x, y, _, _ = digits_data
    tf_keras.utils.set_random_seed(1)
    inp = tf_keras.Input((8, 8, 1), name="image")
    h = tf_keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv1")(inp)
    h = tf_keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv2")(h)
    h = tf_keras.layers.MaxPooling2D(name="pool")(h)
    h = tf_keras.layers.Flatten(name="flatten")(h)
    h = tf_keras.layers.Dense(64, activation="relu", name="fc1")(h)
    out = tf_keras.layers.Dense(10, activation="softmax", name="predictions")(h)
    model = tf_keras.Model(inp, out, name="legacy_cnn")
    model.compile(optimizer=tf_keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(x, y, epochs=8, batch_size=64, verbose=0)
    return model


def _run(model, digits_data, recipe, tmp_path, target="x86-avx2"):
    x, y, xt, yt = digits_data
    env = os.environ.get("TF_USE_LEGACY_KERAS")
    digest = weights_digest(model)
    result = kc.optimize(model, target=load(target), data={"train": (x, y), "eval": (xt, yt)}, recipe=recipe,
                         constraints=BUDGET, output_dir=tmp_path, verbose=False, latency_runs=3)
    assert weights_digest(model) == digest, "the caller's model was modified"
    assert os.environ.get("TF_USE_LEGACY_KERAS") == env, "TF_USE_LEGACY_KERAS leaked"
    return result


def _steps(result) -> dict:
    return {s.name: s for s in result.report.steps}


def test_copy_count_and_float_export_of_a_tf_keras_model(legacy_cnn, digits_data) -> None:
    from kerascompress.export.tf_keras_tflite import tf_keras_to_tflite
    from kerascompress.models.tf_keras import count_tf_keras

    clone = copy_model(legacy_cnn)
    assert type(clone).__module__.startswith("tf_keras") and clone is not legacy_cnn
    assert weights_digest(clone) == weights_digest(legacy_cnn)
    params, macs = count_tf_keras(legacy_cnn)
    assert params == legacy_cnn.count_params()
    # conv1 8*8*16*9 + conv2 8*8*32*9*16 + fc1 512*64 + predictions 64*10
    assert macs == 8 * 8 * 16 * 9 + 8 * 8 * 32 * 9 * 16 + 512 * 64 + 64 * 10
    from kerascompress.runtime.litert import LiteRTModel

    x = digits_data[2][:32]
    out = LiteRTModel(tf_keras_to_tflite(legacy_cnn, "float32")).predict(x)
    np.testing.assert_allclose(out, legacy_cnn.predict(x, verbose=0), atol=1e-5)
    with pytest.raises(ConfigError, match="Keras 3"):
        tf_keras_to_tflite(legacy_cnn, PrecisionPlan(mode="int8", float_layers=("fc1",)), x)


def test_optimize_clusters_and_quantizes_a_tf_keras_model(legacy_cnn, digits_data, tmp_path) -> None:
    result = _run(legacy_cnn, digits_data, [Cluster(16), Quantize("int8")], tmp_path)
    report = result.report
    steps = _steps(result)
    assert steps["cluster:16"].status == "applied", steps["cluster:16"].reason
    assert steps["cluster:16"].details["backend"] == "tfmot"
    assert all(v["unique_values"] <= 16 for v in steps["cluster:16"].details["layers"].values())
    assert steps["quantize:int8"].status == "applied", steps["quantize:int8"].reason
    assert report.final.precision.startswith("int8")
    assert report.baseline.accuracy - report.final.accuracy <= BUDGET.max_accuracy_drop
    assert report.baseline.params == legacy_cnn.count_params() and report.baseline.macs > 0
    # int8 per-channel quantization of a 16-cluster kernel keeps <= 16 values per output channel
    stats = tflite_kernel_stats(result.artifacts["tflite"].read_bytes())
    assert stats and all(s["dtype"] == "int8" and s["max_unique_per_channel"] <= 16 for s in stats)
    assert result.artifacts["keras"] is not None and result.artifacts["onnx"] is None
    assert any("ONNX export skipped" in n for n in report.notes)
    assert any("tf_keras" in n for n in report.notes)
    assert (tmp_path / "report.json").exists() and (tmp_path / "report.md").exists()


def test_optimize_2_4_sparsity_and_refuses_structured_passes(legacy_cnn, digits_data, tmp_path) -> None:
    recipe = [ChannelPruning(), LowRank(), Sparsity("2:4", finetune_epochs=1), Quantize("mixed")]
    result = _run(legacy_cnn, digits_data, recipe, tmp_path)
    steps = _steps(result)
    for name in ("channel_pruning", "lowrank"):
        assert steps[name].status == "skipped" and "needs a Keras 3 model" in steps[name].reason
    assert "structured pruning needs a Keras 3 model" in steps["channel_pruning"].reason
    sparse = steps["sparsity:2:4"]
    assert sparse.status in ("applied", "rolled back"), sparse.reason
    assert sparse.details["backend"] == "tfmot" and sparse.details["pattern"] == "2:4"
    layers = sparse.details["layers"]
    assert layers["conv1.kernel"]["sparse"] is False and "not a multiple of 4" in layers["conv1.kernel"]["reason"]
    assert all(v["sparsity"] >= 0.49 for k, v in layers.items() if k != "conv1.kernel")
    assert steps["quantize:mixed"].status == "skipped" and "Keras 3" in steps["quantize:mixed"].reason


def test_optimize_qat_on_a_tf_keras_model(legacy_cnn, digits_data, tmp_path) -> None:
    result = _run(legacy_cnn, digits_data, [QuantizationAwareTraining(epochs=1)], tmp_path)
    step = _steps(result)["qat"]
    assert step.status == "applied", step.reason
    assert step.details["backend"] == "tfmot" and step.after.precision.startswith("int8")
    assert result.report.baseline.accuracy - step.after.accuracy <= BUDGET.max_accuracy_drop
    stats = tflite_kernel_stats(result.artifacts["tflite"].read_bytes())
    assert stats and all(s["dtype"] == "int8" for s in stats)


def test_tensorrt_target_refuses_a_tf_keras_model_clearly(legacy_cnn, digits_data, tmp_path) -> None:
    from kerascompress.errors import UnsupportedModelError

    with pytest.raises(UnsupportedModelError, match="Keras 3 models only"):
        _run(legacy_cnn, digits_data, [Quantize("int8")], tmp_path, target="nvidia-t4-sm75")
