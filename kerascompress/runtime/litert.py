"""Run and time TFLite models with the LiteRT interpreter, float in and float out.

Callers hand in float arrays and get float arrays back whatever the model's I/O types
(int8/uint8/int16 tensors are quantized and dequantized here with their scale and zero
point), with inputs and outputs in the Keras model's order, so fidelity code never needs
to know how an artifact was quantized.

Timings on shared machines drift by tens of percent within a minute; `compare_latency`
therefore runs the variants round-robin in one process, so the drift hits all of them
alike and their ratios stay meaningful.
"""
from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np

from kerascompress.errors import DataError, ExportError
from kerascompress.runtime.stats import LatencyStats

ModelSource = Union[bytes, bytearray, str, os.PathLike]

#: Batch used by `predict` when the model's batch dimension is dynamic.
DEFAULT_BATCH = 32


def _read_source(model: ModelSource) -> tuple[bytes, Optional[Path]]:
    if isinstance(model, (bytes, bytearray, memoryview)):
        return bytes(model), None
    path = Path(model)
    if not path.is_file():
        raise ExportError(f"TFLite model {str(path)!r} does not exist")
    return path.read_bytes(), path


def _quantize(x: np.ndarray, detail: Mapping[str, Any]) -> np.ndarray:
    dtype = np.dtype(detail["dtype"])
    scale, zero_point = detail.get("quantization", (0.0, 0))
    if dtype.kind in "iu" and scale:
        info = np.iinfo(dtype)
        q = np.round(np.asarray(x, dtype=np.float64) / scale + zero_point)
        return np.clip(q, info.min, info.max).astype(dtype)
    return np.asarray(x).astype(dtype, copy=False)


def _dequantize(q: np.ndarray, detail: Mapping[str, Any]) -> np.ndarray:
    dtype = np.dtype(detail["dtype"])
    scale, zero_point = detail.get("quantization", (0.0, 0))
    if dtype.kind in "iu" and scale:
        return ((q.astype(np.float32) - np.float32(zero_point)) * np.float32(scale)).astype(np.float32)
    return q.astype(np.float32) if dtype.kind == "f" else q


class LiteRTModel:
    """A TFLite model loaded into ``ai_edge_litert.interpreter.Interpreter``.

    ``model`` is the flatbuffer bytes or a path to a .tflite file. Inputs follow the
    flatbuffer's input order (the Keras order for models converted from Keras);
    outputs follow the ``output_<i>`` names of the serving signature when there is one
    (the converter may list outputs in another order) and the flatbuffer order otherwise.
    """

    def __init__(self, model: ModelSource, num_threads: int = 1) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.content, self.path = _read_source(model)
        self.num_threads = int(num_threads)
        try:
            self._interp = Interpreter(model_content=self.content, num_threads=self.num_threads)
            self._interp.allocate_tensors()
        except Exception as exc:
            where = f" {str(self.path)!r}" if self.path else ""
            raise ExportError(f"the TFLite model{where} cannot be loaded (corrupt or not a TFLite file): {exc}") from exc
        self.input_details = list(self._interp.get_input_details())
        self.output_details = self._ordered_outputs()
        self._signature_inputs = self._signature_input_names()
        self._timing_ready = False

    # ------------------------------------------------------------------ metadata

    @property
    def size_bytes(self) -> int:
        """Size of the flatbuffer."""
        return len(self.content)

    @property
    def input_names(self) -> list[str]:
        return [d["name"] for d in self.input_details]

    @property
    def output_names(self) -> list[str]:
        return [d["name"] for d in self.output_details]

    @property
    def batch_size(self) -> Optional[int]:
        """The fixed batch size, or None when the batch dimension is dynamic."""
        sig = self.input_details[0].get("shape_signature")
        if sig is not None and len(sig) and int(sig[0]) == -1:
            return None
        return int(self.input_details[0]["shape"][0]) if len(self.input_details[0]["shape"]) else 1

    def _ordered_outputs(self) -> list[dict]:
        details = list(self._interp.get_output_details())
        try:
            sigs = self._interp._get_full_signature_list()
        except Exception:  # pragma: no cover - older interpreters
            sigs = {}
        if len(sigs) != 1:
            return details
        outputs = next(iter(sigs.values())).get("outputs", {})
        numbered = {}
        for key, idx in outputs.items():
            m = re.fullmatch(r"output_(\d+)", key)
            if not m:
                return details
            numbered[int(m.group(1))] = idx
        by_index = {d["index"]: d for d in details}
        if sorted(numbered) != list(range(len(details))) or set(numbered.values()) != set(by_index):
            return details
        return [by_index[numbered[k]] for k in sorted(numbered)]

    def _signature_input_names(self) -> dict[str, int]:
        try:
            sigs = self._interp._get_full_signature_list()
        except Exception:  # pragma: no cover
            return {}
        if len(sigs) != 1:
            return {}
        return dict(next(iter(sigs.values())).get("inputs", {}))

    # ------------------------------------------------------------------ predict

    def _as_input_list(self, x: Any) -> list[np.ndarray]:
        n_in = len(self.input_details)
        if isinstance(x, Mapping):
            arrays = []
            for d in self.input_details:
                key = next((k for k in x if k == d["name"] or self._signature_inputs.get(k) == d["index"]), None)
                if key is None:
                    raise DataError(f"no data for model input {d['name']!r}; got keys {sorted(x)}")
                arrays.append(np.asarray(x[key]))
        elif isinstance(x, (list, tuple)) and n_in > 1:
            arrays = [np.asarray(a) for a in x]
        else:
            arrays = [np.asarray(x)]
        if len(arrays) != n_in:
            raise DataError(f"the model has {n_in} inputs but {len(arrays)} arrays were given")
        for a, d in zip(arrays, self.input_details):
            want = tuple(int(s) for s in d.get("shape_signature", d["shape"]))[1:]
            got = a.shape[1:]
            if len(want) != len(got) or any(w not in (-1, g) for w, g in zip(want, got)):
                raise DataError(
                    f"input {d['name']!r} expects samples of shape {tuple(w if w != -1 else None for w in want)} "
                    f"but got {got}"
                )
        if len({len(a) for a in arrays}) != 1:
            raise DataError(f"input arrays have different lengths: {[len(a) for a in arrays]}")
        return arrays

    def _resize(self, shapes: Sequence[tuple[int, ...]]) -> None:
        current = [tuple(int(s) for s in d["shape"]) for d in self._interp.get_input_details()]
        if current == [tuple(s) for s in shapes]:
            return
        for d, shape in zip(self.input_details, shapes):
            self._interp.resize_tensor_input(d["index"], list(shape), strict=False)
        self._interp.allocate_tensors()
        # Quantization parameters do not change; shapes do.
        self._timing_ready = False

    def _run(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        for a, d in zip(arrays, self.input_details):
            self._interp.set_tensor(d["index"], _quantize(a, d))
        self._interp.invoke()
        return [_dequantize(self._interp.get_tensor(d["index"]), d) for d in self.output_details]

    def predict(self, x: Any, batch_size: Optional[int] = None) -> Union[np.ndarray, list[np.ndarray]]:
        """Outputs for ``x`` (one array, a list in input order, or a dict by input name).

        Runs in batches of the model's fixed batch size (the last one padded), or of
        ``batch_size`` (default 32) when the batch dimension is dynamic. Returns one
        float array per output (a list when there are several).
        """
        arrays = self._as_input_list(x)
        n = len(arrays[0])
        if n == 0:
            raise DataError("predict got an empty input")
        fixed = self.batch_size
        step = fixed or max(1, min(int(batch_size or DEFAULT_BATCH), n))
        chunks: list[list[np.ndarray]] = [[] for _ in self.output_details]
        for start in range(0, n, step):
            part = [a[start: start + step] for a in arrays]
            m = len(part[0])
            if fixed:
                if m < fixed:
                    part = [np.concatenate([p, np.repeat(p[-1:], fixed - m, axis=0)]) for p in part]
                self._resize([(fixed,) + p.shape[1:] for p in part])
            else:
                self._resize([p.shape for p in part])
            outs = self._run(part)
            for i, o in enumerate(outs):
                chunks[i].append(o[:m])
        results = [np.concatenate(c) for c in chunks]
        return results[0] if len(results) == 1 else results

    # ------------------------------------------------------------------ timing

    def prepare_timing(self, x: Any = None, seed: int = 0) -> None:
        """Load one batch-1 sample (``x[:1]`` or random) for `run_once`."""
        if x is None:
            rng = np.random.default_rng(seed)
            arrays = []
            for d in self.input_details:
                shape = [1] + [int(s) if int(s) > 0 else 1 for s in d.get("shape_signature", d["shape"])[1:]]
                if np.dtype(d["dtype"]).kind == "f" or d.get("quantization", (0, 0))[0]:
                    arrays.append(rng.standard_normal(shape).astype(np.float32))
                else:
                    arrays.append(np.zeros(shape, dtype=d["dtype"]))
        else:
            arrays = [a[:1] for a in self._as_input_list(x)]
        self._resize([a.shape for a in arrays] if self.batch_size is None
                     else [(self.batch_size,) + a.shape[1:] for a in arrays])
        for a, d in zip(arrays, self.input_details):
            if self.batch_size and self.batch_size > 1:
                a = np.repeat(a, self.batch_size, axis=0)
            self._interp.set_tensor(d["index"], _quantize(a, d))
        self._timing_ready = True

    def run_once(self) -> float:
        """One timed invoke on the prepared sample, in milliseconds."""
        if not self._timing_ready:
            self.prepare_timing()
        start = time.perf_counter()
        self._interp.invoke()
        return (time.perf_counter() - start) * 1e3

    def latency(self, runs: int = 50, warmup: int = 5, x: Any = None) -> LatencyStats:
        """Median/p90/mean time per invoke at batch 1 (for A/B use `compare_latency`)."""
        self.prepare_timing(x)
        for _ in range(int(warmup)):
            self.run_once()
        return LatencyStats.from_times([self.run_once() for _ in range(int(runs))], self.num_threads)


