"""The tfmot session, and `kc.optimize` on a legacy tf_keras (Keras 2) model through it.

Cluster/Sparsity/QAT on tf_keras models run through tensorflow-model-optimization.
It needs tf-keras, which needs the full `tensorflow` wheel (not tensorflow-cpu): the
end-to-end tests are skipped where they are not installed.
"""
from __future__ import annotations

import os

import pytest

import kerascompress as kc  # noqa: E402
from kerascompress.export.tflite_inspect import tflite_kernel_stats  # noqa: E402
from kerascompress.legacy.tfmot import missing_reason  # noqa: E402
from kerascompress.models.io import weights_digest  # noqa: E402
from kerascompress.passes.cluster import Cluster  # noqa: E402
from kerascompress.passes.lowrank import LowRank  # noqa: E402
from kerascompress.passes.pruning import ChannelPruning  # noqa: E402
from kerascompress.passes.qat import QuantizationAwareTraining  # noqa: E402
from kerascompress.passes.quantize import Quantize  # noqa: E402
from kerascompress.passes.sparsity import Sparsity  # noqa: E402
from kerascompress.pipeline.types import Constraints  # noqa: E402
from kerascompress.targets import load  # noqa: E402

needs_tfmot = pytest.mark.skipif(missing_reason() is not None, reason=f"tfmot path not installed: {missing_reason()}")

BUDGET = Constraints(max_accuracy_drop=0.03, max_slowdown=100.0)


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


@needs_tfmot
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


@needs_tfmot
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


@needs_tfmot
def test_optimize_qat_on_a_tf_keras_model(legacy_cnn, digits_data, tmp_path) -> None:
    result = _run(legacy_cnn, digits_data, [QuantizationAwareTraining(epochs=1)], tmp_path)
    step = _steps(result)["qat"]
    assert step.status == "applied", step.reason
    assert step.details["backend"] == "tfmot" and step.after.precision.startswith("int8")
    assert result.report.baseline.accuracy - step.after.accuracy <= BUDGET.max_accuracy_drop
    stats = tflite_kernel_stats(result.artifacts["tflite"].read_bytes())
    assert stats and all(s["dtype"] == "int8" for s in stats)


def test_tfmot_session_restores_tf_use_legacy_keras(tmp_path, monkeypatch) -> None:
    """tfmot sets TF_USE_LEGACY_KERAS=1 when imported; the session must not let it leak."""
    import os
    import sys

    from kerascompress.legacy import tfmot as tfmot_backend

    fake = tmp_path / "tensorflow_model_optimization"
    fake.mkdir()
    (fake / "__init__.py").write_text("import os\nos.environ['TF_USE_LEGACY_KERAS'] = '1'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "tensorflow_model_optimization", raising=False)
    monkeypatch.delenv("TF_USE_LEGACY_KERAS", raising=False)
    monkeypatch.setattr(tfmot_backend, "missing_reason", lambda: None)
    with tfmot_backend.tfmot_session() as mod:
        assert os.environ.get("TF_USE_LEGACY_KERAS") == "1" and mod.__name__ == "tensorflow_model_optimization"
    assert "TF_USE_LEGACY_KERAS" not in os.environ
    monkeypatch.setenv("TF_USE_LEGACY_KERAS", "0")
    with tfmot_backend.tfmot_session():
        pass
    assert os.environ["TF_USE_LEGACY_KERAS"] == "0"
    # Drop the fake directly: a monkeypatch.delitem here would be undone, putting the fake back into
    # sys.modules for later tests (the real tfmot, if it was imported before, is restored by the first delitem).
    sys.modules.pop("tensorflow_model_optimization", None)


def test_tfmot_path_unavailable_says_how_to_install(monkeypatch) -> None:
    from kerascompress.legacy.tfmot import (
        LegacyUnavailable,
        missing_reason,
        tfmot_session,
    )

    reason = missing_reason()
    if reason is None:
        pytest.skip("tfmot and tf_keras are installed here")
    assert "kerascompress[tfmot]" in reason
    with pytest.raises(LegacyUnavailable, match="not installed"):
        with tfmot_session():
            pass
