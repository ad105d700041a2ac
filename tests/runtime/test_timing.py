"""Interleaved timing of several artifacts, and latency ratios."""
from __future__ import annotations

import numpy as np
import pytest

from kerascompress.errors import ConfigError
from kerascompress.export.tflite import to_tflite
from kerascompress.runtime.stats import LatencyStats
from kerascompress.runtime.timing import compare_latency, ratios


def test_latency_and_interleaved_comparison(two_io, tmp_path):
    """Bytes and a path side by side; the LiteRT runner's own latency is in test_litert."""
    model, x = two_io
    fp32 = to_tflite(model, "float32")
    path = tmp_path / "int8.tflite"
    to_tflite(model, "int8", representative_data=x, path=path)
    both = compare_latency({"float32": fp32, "int8": path}, runs=6, warmup=1)
    assert set(both) == {"float32", "int8"}
    assert all(s.runs == 6 and s.median_ms > 0 for s in both.values())
    r = ratios(both)
    assert r["float32"] == 1.0 and r["int8"] > 0
    with pytest.raises(ConfigError, match="baseline"):
        ratios(both, baseline="fp16")


def test_interleaving_is_round_robin():
    calls: list[str] = []

    class Fake:
        """A `Runner` that records when it is run."""

        num_threads = 1

        def __init__(self, name: str) -> None:
            self.name = name

        def predict(self, x):
            return x

        def prepare_timing(self, x=None) -> None:
            pass

        def run_once(self) -> float:
            calls.append(self.name)
            return 1.0

        def latency(self, runs=50, warmup=5, x=None):
            raise AssertionError("compare_latency times runners itself")

    stats = compare_latency({"a": Fake("a"), "b": Fake("b"), "c": Fake("c")}, runs=3, warmup=0, block=1)
    assert calls == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    assert stats["b"].median_ms == 1.0
    calls.clear()  # blocks: each variant warms up once, then runs `block` times in a row; the last block is shorter
    stats = compare_latency({"a": Fake("a"), "b": Fake("b")}, runs=3, warmup=0, block=2)
    assert calls == ["a", "a", "a", "b", "b", "b", "b", "b", "a", "a"]
    assert stats["a"].runs == 3 and stats["b"].runs == 3


def test_onnx_and_tflite_are_timed_interleaved_together(tmp_path):
    import keras

    from kerascompress.export.onnx import to_onnx
    from kerascompress.export.tflite import to_tflite
    from kerascompress.runtime.onnx_runner import OnnxModel
    from kerascompress.runtime.timing import compare_latency

    inp = keras.Input((16,))
    model = keras.Model(inp, keras.layers.Dense(4)(inp))
    to_onnx(model, path=tmp_path / "m.onnx")
    stats = compare_latency({"tflite": to_tflite(model), "onnx": OnnxModel(tmp_path / "m.onnx")}, runs=7, warmup=1)
    assert set(stats) == {"tflite", "onnx"}
    assert all(s.runs == 7 and s.median_ms > 0 for s in stats.values())


def test_no_models_and_unknown_baselines_are_config_errors():
    with pytest.raises(ConfigError, match="at least one"):
        compare_latency({})
    with pytest.raises(ConfigError, match="cannot form ratios"):
        ratios({"float32": LatencyStats(0.0, 0.0, 0.0, 1, 1), "int8": LatencyStats(1.0, 1.0, 1.0, 1, 1)})


def test_ratios_divide_by_the_baseline_median():
    stats = {"float32": LatencyStats(2.0, 3.0, 2.5, 5, 1), "int8": LatencyStats(0.5, 0.6, 0.55, 5, 1)}
    assert ratios(stats) == {"float32": 1.0, "int8": 0.25}
    assert ratios(stats, baseline="int8") == {"float32": 4.0, "int8": 1.0}


def test_each_runner_reports_its_own_thread_count():
    class Threads:
        def __init__(self, n):
            self.num_threads = n

        def predict(self, x):
            return x

        def prepare_timing(self, x=None):
            self.x = x

        def run_once(self):
            return 2.0

        def latency(self, runs=50, warmup=5, x=None):
            raise AssertionError

    one, four = Threads(1), Threads(4)
    stats = compare_latency({"one": one, "four": four}, runs=2, warmup=0, num_threads=8, x=np.ones((3, 2)))
    assert (stats["one"].threads, stats["four"].threads) == (1, 4)
    assert one.x.shape == (3, 2)  # the caller's sample reaches every runner
