"""The optimize contract's value types: Constraints check their budgets; OptimizeResult saves everything."""
from __future__ import annotations

import json

import keras
import pytest

import kerascompress as kc
from kerascompress.pipeline.report import Metrics, Report
from kerascompress.pipeline.types import Constraints, OptimizeResult


def test_constraints_refuse_budgets_that_cannot_mean_anything():
    with pytest.raises(kc.ConfigError, match="max_accuracy_drop"):
        kc.Constraints(max_accuracy_drop=5)
    with pytest.raises(kc.ConfigError, match="max_slowdown"):
        Constraints(max_slowdown=0.9)
    with pytest.raises(kc.ConfigError, match="max_latency_ms"):
        Constraints(max_latency_ms=0)
    with pytest.raises(kc.ConfigError, match="max_size_bytes"):
        Constraints(max_size_bytes=-1)
    c = Constraints(max_accuracy_drop=0.0, max_latency_ms=2.5, max_size_bytes=10_000, max_slowdown=1.0)
    assert (c.max_accuracy_drop, c.max_slowdown) == (0.0, 1.0)


def test_result_save_copies_model_artifacts_and_report(tmp_path):
    inp = keras.Input((3,))
    model = keras.Model(inp, keras.layers.Dense(2)(inp))
    produced = tmp_path / "run"
    produced.mkdir()
    (produced / "model.tflite").write_bytes(b"TFL3 stand-in")
    report = Report(model_name="m", target={"name": "x"}, constraints={}, baseline=Metrics(params=8, macs=16, precision="float32"))
    result = OptimizeResult(model=model, artifacts={"tflite": produced / "model.tflite", "onnx": None}, report=report)
    out = result.save(tmp_path / "saved")
    assert sorted(p.name for p in out.iterdir()) == ["model.keras", "model.tflite", "report.json", "report.md"]
    assert (out / "model.tflite").read_bytes() == b"TFL3 stand-in"
    assert json.loads((out / "report.json").read_text())["model_name"] == "m"
