"""Run and time a serialized TensorRT engine, on the device that has TensorRT and a GPU.

`kerascompress validate model.engine --reference model.keras` uses this on the target
itself. Here (no TensorRT, no GPU) it refuses with what to do instead: validate the
ONNX the engine is built from, whose precision is the engine's.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from kerascompress.errors import ExportError
from kerascompress.runtime.stats import LatencyStats
from kerascompress.runtime.tensorrt_engine import trt_run_engine


def _require_tensorrt() -> Any:
    try:
        import tensorrt as trt
    except ModuleNotFoundError as exc:
        if exc.name != "tensorrt":  # tensorrt is there, one of its own dependencies is not
            raise ExportError(f"the `tensorrt` package is installed but cannot be imported: {exc}") from exc
        raise ExportError(
            "validating a TensorRT engine needs the `tensorrt` package and an NVIDIA GPU, as on the target device; "
            "on this host validate the ONNX it is built from instead (kerascompress validate model.onnx --reference ...)"
        ) from exc
    except Exception as exc:  # e.g. bindings-only wheels without the libraries
        raise ExportError(f"the `tensorrt` package is installed but cannot be imported: {exc}") from exc
    return trt


class TensorRTEngineModel:
    """A serialized engine as a `Runner` (`predict`, `latency`, `prepare_timing`, `run_once`).

    Each call loads the engine afresh (the device code in `tensorrt_engine` keeps no
    state between calls), so `run_once` warms up once before its timed execution: its
    number is a warm inference, but a call costs an engine load. For many runs of one
    engine, `latency` times them all on one load.
    """

    def __init__(self, path: Union[str, os.PathLike], num_threads: int = 1) -> None:
        trt = _require_tensorrt()
        self.path = Path(path)
        self.num_threads = int(num_threads)  # unused by TensorRT; kept for the shared interface
        engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(self.path.read_bytes())
        if engine is None:
            raise ExportError(f"{self.path} is not a TensorRT engine for this GPU and TensorRT version")
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self.input_names = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.output_names = [n for n in names if n not in self.input_names]
        self._timing_feeds: Optional[dict[str, np.ndarray]] = None

    def _feeds(self, x: Any) -> dict[str, np.ndarray]:
        arrays = [x[n] for n in self.input_names] if isinstance(x, dict) else (
            list(x) if isinstance(x, (list, tuple)) else [x])
        return {n: np.asarray(a) for n, a in zip(self.input_names, arrays)}

    def predict(self, x: Any) -> Any:
        outputs, _ = trt_run_engine(str(self.path), self._feeds(x), runs=1, warmup=0)
        result = [outputs[n] for n in self.output_names]
        return result[0] if len(result) == 1 else result

    def prepare_timing(self, x: Any = None) -> None:
        """Fix the batch-1 sample (``x[:1]``) `run_once` runs; an engine needs real inputs."""
        if x is None:
            raise ExportError("timing a TensorRT engine needs sample inputs: pass data")
        self._timing_feeds = {n: a[:1] for n, a in self._feeds(x).items()}

    def run_once(self) -> float:
        """One timed execution on the prepared sample, in milliseconds (after one untimed warm-up)."""
        if self._timing_feeds is None:
            self.prepare_timing()
        _, times = trt_run_engine(str(self.path), self._timing_feeds, runs=1, warmup=1)
        return float(times[0])

    def latency(self, runs: int = 50, warmup: int = 5, x: Any = None) -> LatencyStats:
        self.prepare_timing(x)
        _, times = trt_run_engine(str(self.path), self._timing_feeds, runs=runs, warmup=warmup)
        return LatencyStats.from_times(times, self.num_threads)
