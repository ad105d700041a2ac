"""The TensorRT engine runner: I/O order, batch-1 timing, and a clear refusal without TensorRT.

A real engine needs TensorRT and an NVIDIA GPU; here a stand-in `tensorrt` module and
engine runner check everything the runner itself decides.
"""
from __future__ import annotations

import importlib.util
from types import SimpleNamespace

import numpy as np
import pytest

from kerascompress.errors import ExportError
from kerascompress.runtime import tensorrt_runner
from kerascompress.runtime.runner import Runner
from kerascompress.runtime.tensorrt_runner import TensorRTEngineModel


class _Engine:
    names = ("b_in", "out_z", "a_in", "out_a")  # inputs and outputs interleaved, as an engine may list them

    num_io_tensors = len(names)

    def get_tensor_name(self, i):
        return self.names[i]

    def get_tensor_mode(self, name):
        return "input" if name.endswith("_in") else "output"


def _fake_tensorrt():
    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            return _Engine() if data == b"engine" else None

    logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level: None})
    return SimpleNamespace(Runtime=Runtime, Logger=logger, TensorIOMode=SimpleNamespace(INPUT="input"))


@pytest.fixture
def engine(tmp_path, monkeypatch):
    calls = []

    def run(path, feeds, runs=50, warmup=10):
        calls.append({"path": path, "feeds": feeds, "runs": runs, "warmup": warmup})
        batch = len(feeds["b_in"])
        outputs = {"out_z": np.full((batch, 1), 1.0, np.float32), "out_a": np.full((batch, 2), 2.0, np.float32)}
        return outputs, [0.5 + i for i in range(runs)]

    monkeypatch.setattr(tensorrt_runner, "_require_tensorrt", _fake_tensorrt)
    monkeypatch.setattr(tensorrt_runner, "trt_run_engine", run)
    path = tmp_path / "model.engine"
    path.write_bytes(b"engine")
    return TensorRTEngineModel(path, num_threads=3), calls


def test_inputs_and_outputs_keep_the_engines_order(engine):
    model, calls = engine
    assert isinstance(model, Runner)
    assert model.input_names == ["b_in", "a_in"] and model.output_names == ["out_z", "out_a"]
    x = {"a_in": np.zeros((4, 2)), "b_in": np.ones((4, 3))}
    z, a = model.predict(x)
    assert z.shape == (4, 1) and a.shape == (4, 2) and a[0, 0] == 2.0
    assert list(calls[-1]["feeds"]) == ["b_in", "a_in"] and (calls[-1]["runs"], calls[-1]["warmup"]) == (1, 0)
    model.predict([np.ones((2, 3)), np.zeros((2, 2))])  # a list is in input order
    assert calls[-1]["feeds"]["b_in"].shape == (2, 3)


def test_timing_runs_batch_one_and_run_once_is_warm(engine):
    model, calls = engine
    x = [np.ones((8, 3)), np.zeros((8, 2))]
    stats = model.latency(runs=4, warmup=2, x=x)
    assert stats.runs == 4 and stats.threads == 3 and stats.median_ms == 2.0
    assert calls[-1]["feeds"]["b_in"].shape == (1, 3) and calls[-1]["warmup"] == 2
    model.prepare_timing(x)
    assert model.run_once() == 0.5
    assert (calls[-1]["runs"], calls[-1]["warmup"]) == (1, 1)


def test_timing_an_engine_needs_real_inputs(engine):
    model, _ = engine
    with pytest.raises(ExportError, match="needs sample inputs"):
        model.run_once()
    with pytest.raises(ExportError, match="needs sample inputs"):
        model.latency(runs=2)


def test_a_file_that_is_not_an_engine_for_this_gpu(tmp_path, monkeypatch):
    monkeypatch.setattr(tensorrt_runner, "_require_tensorrt", _fake_tensorrt)
    (tmp_path / "other.engine").write_bytes(b"built elsewhere")
    with pytest.raises(ExportError, match="not a TensorRT engine for this GPU"):
        TensorRTEngineModel(tmp_path / "other.engine")


def test_without_tensorrt_the_refusal_points_at_the_onnx(tmp_path):
    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("tensorrt is installed here")
    with pytest.raises(ExportError, match="validate the ONNX it is built from"):
        TensorRTEngineModel(tmp_path / "model.engine")
