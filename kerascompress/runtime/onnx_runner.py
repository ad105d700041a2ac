"""Run and time an ONNX model with onnxruntime, the way the Keras model is called.

Used to check every ONNX artifact against its Keras source before it is reported as
good, and to time it on this host's CPU (a TensorRT target is timed on the device).
Inputs and outputs are float32 in Keras order, whatever the graph stores inside
(float16 I/O is cast at the boundary), so callers compare like with like.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Mapping, Sequence, Union

import numpy as np

from kerascompress.errors import DataError, ExportError
from kerascompress.runtime.stats import LatencyStats

Inputs = Union[np.ndarray, Sequence[np.ndarray], Mapping[str, np.ndarray]]

_NP_TYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}


class OnnxModel:
    """An ONNX model loaded into an onnxruntime CPU session.

    ``num_threads`` fixes intra-op threads (1 by default: stable timings on a shared
    machine, and the number a report should quote).
    """

    def __init__(self, path_or_bytes: Union[str, os.PathLike, bytes], num_threads: int = 1):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(num_threads)
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        src = path_or_bytes if isinstance(path_or_bytes, bytes) else str(Path(path_or_bytes))
        if not isinstance(src, bytes) and not Path(src).is_file():
            raise DataError(f"ONNX file {src} does not exist; export it first with kc.export.to_onnx")
        try:
            self.session = ort.InferenceSession(src, sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as err:
            raise ExportError(f"onnxruntime cannot load this model: {err}") from err
        self.num_threads = int(num_threads)
        self.inputs = self.session.get_inputs()
        self.outputs = self.session.get_outputs()
        self.input_names = [i.name for i in self.inputs]
        self.output_names = [o.name for o in self.outputs]

    def _feeds(self, x: Inputs) -> dict[str, np.ndarray]:
        if isinstance(x, Mapping):
            missing = [n for n in self.input_names if n not in x]
            if missing:
                raise DataError(f"missing inputs {missing}; the model takes {self.input_names}")
            arrays = [x[n] for n in self.input_names]
        elif isinstance(x, np.ndarray) or not isinstance(x, Sequence):
            arrays = [x]
        else:
            arrays = list(x)
        if len(arrays) != len(self.inputs):
            raise DataError(f"the model takes {len(self.inputs)} inputs ({self.input_names}), got {len(arrays)}")
        feeds = {}
        for spec, arr in zip(self.inputs, arrays):
            arr = np.asarray(arr)
            want = _NP_TYPES.get(spec.type, np.float32)
            rank = len(spec.shape)
            if arr.ndim != rank:
                raise DataError(
                    f"input {spec.name!r} needs rank {rank} (shape {spec.shape}), got shape {arr.shape}"
                )
            feeds[spec.name] = arr.astype(want, copy=False)
        return feeds

    def predict(self, x: Inputs) -> Union[np.ndarray, list[np.ndarray]]:
        """Outputs as float32 (one array, or a list in Keras output order)."""
        outs = self.session.run(None, self._feeds(x))
        outs = [o.astype(np.float32) if np.issubdtype(o.dtype, np.floating) else o for o in outs]
        return outs[0] if len(outs) == 1 else outs

    def prepare_timing(self, x: Inputs | None = None) -> None:
        """Fix the batch-1 feeds `run_once` uses (``x[:1]``, or random inputs)."""
        if x is None:
            self._timing_feeds = self._random_feeds()
        else:
            self._timing_feeds = {k: v[:1] for k, v in self._feeds(x).items()}

    def run_once(self) -> float:
        """One timed call on the prepared feeds, in milliseconds (for interleaved timing)."""
        if getattr(self, "_timing_feeds", None) is None:
            self.prepare_timing()
        t0 = time.perf_counter()
        self.session.run(None, self._timing_feeds)
        return (time.perf_counter() - t0) * 1000.0

    def latency(self, runs: int = 50, warmup: int = 5, x: Inputs | None = None) -> LatencyStats:
        """Wall-clock time per call on this host (random inputs of batch 1 by default)."""
        self.prepare_timing(x)
        for _ in range(max(0, warmup)):
            self.run_once()
        return LatencyStats.from_times([self.run_once() for _ in range(max(1, runs))], self.num_threads)

    def _random_feeds(self) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(0)
        feeds = {}
        for spec in self.inputs:
            shape = [d if isinstance(d, int) and d > 0 else 1 for d in spec.shape]
            dtype = _NP_TYPES.get(spec.type, np.float32)
            if np.issubdtype(dtype, np.floating):
                feeds[spec.name] = rng.uniform(-1, 1, size=shape).astype(dtype)
            else:
                feeds[spec.name] = np.zeros(shape, dtype=dtype)
        return feeds


__all__ = ["LatencyStats", "OnnxModel"]
