"""Measuring model states for the target: export, outputs against the original, size, latency.

The driver measures every state the same way, and lends the same services to passes
through `PassContext` (`build` and `time`), so a pass never exports or runs anything
itself and a candidate a pass picked is judged exactly as the driver judges it.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Optional

import numpy as np

from kerascompress.data.bundle import DataBundle
from kerascompress.data.samples import n_samples, take
from kerascompress.graph.counting import count_model
from kerascompress.metrics.fidelity import compare_outputs, correct_per_sample
from kerascompress.metrics.statistics import accuracy_standard_error, paired_difference
from kerascompress.models.kinds import is_tf_keras_model
from kerascompress.models.tf_keras import count_tf_keras
from kerascompress.passes.base import ModelState, PassContext
from kerascompress.pipeline.artifacts import Artifact, build_artifact
from kerascompress.pipeline.report import Metrics
from kerascompress.runtime.stats import LatencyStats
from kerascompress.runtime.timing import compare_latency
from kerascompress.targets.target import Target


class Measurer:
    """Exports model states for the target and measures them against the original."""

    def __init__(
        self,
        original: Any,
        target: Target,
        bundle: Optional[DataBundle],
        eval_samples: Optional[int],
        latency_runs: int,
        progress: Callable[[str], None],
        seed: int = 0,
    ) -> None:
        self.target = target
        self.latency_runs = latency_runs
        self.progress = progress
        self.measures_latency = target.runs_here()
        if bundle is not None:
            n = n_samples(bundle.x_eval) if eval_samples is None else eval_samples
            self.x_eval = take(bundle.x_eval, n)
            self.y_eval = None if bundle.y_eval is None else bundle.y_eval[:n]
            self.calibration = bundle.calibration()
        else:
            self.x_eval = random_inputs(original, 64, seed)
            self.y_eval = None
            self.calibration = None
        self.reference = original.predict(self.x_eval, batch_size=256, verbose=0)
        #: Per-sample correctness of the float32 baseline artifact, for paired comparisons.
        self.baseline_correct: Optional[np.ndarray] = None
        self.baseline_artifact: Optional[Artifact] = None
        self.baseline_latency_ms: Optional[float] = None

    def build(self, state: ModelState) -> Artifact:
        return build_artifact(state, self.target, self.calibration)

    def measure(self, state: ModelState, artifact: Artifact, baseline: bool = False) -> Metrics:
        """Metrics of ``state`` exported as ``artifact``; ``baseline=True`` records it as the float32 reference."""
        params, macs = count(state.model)
        outputs = artifact.predict(self.x_eval)
        fid = compare_outputs(self.reference, outputs, labels=self.y_eval)
        correct = correct_per_sample(outputs, self.y_eval, self.reference)
        if baseline:
            self.baseline_correct, self.baseline_artifact = correct, artifact
        paired = self.baseline_correct is not None and correct is not None
        diff = paired_difference(self.baseline_correct, correct) if paired else None
        score = fid.accuracy if fid.accuracy is not None else fid.top1_agreement
        return Metrics(
            params=params,
            macs=macs,
            precision=artifact.precision,
            size_bytes=artifact.size_bytes,
            gzip_bytes=artifact.gzip_bytes,
            accuracy=None if fid.accuracy is None else float(fid.accuracy),
            top1_agreement=None if fid.top1_agreement is None else float(fid.top1_agreement),
            max_abs_error=float(fid.max_abs_error),
            relative_mse=fid.relative_mse,
            runtime="litert" if artifact.kind == "tflite" else "onnxruntime (numerics of the TensorRT ONNX)",
            samples=int(fid.n),
            accuracy_se=None if score is None else accuracy_standard_error(score, fid.n),
            accuracy_drop=None if diff is None else diff.drop,
            accuracy_drop_se=None if diff is None else diff.standard_error,
        )

    def time(self, artifacts: Mapping[str, Artifact], runs: Optional[int] = None) -> dict[str, LatencyStats]:
        """Latency stats per artifact, timed interleaved in one run; {} when not timed here."""
        if not self.measures_latency or {a.kind for a in artifacts.values()} != {"tflite"}:
            return {}
        runs = self.latency_runs if runs is None else runs
        return compare_latency({k: a.data for k, a in artifacts.items()}, runs=runs, warmup=max(3, runs // 10))

    def judge(self, state: ModelState) -> Metrics:
        """Build, measure on the validation data, and time ``state`` interleaved with the baseline.

        The latency is the candidate's ratio to the baseline in this run times the
        baseline's latency measured at the start, so candidates timed at different
        moments of a drifting machine stay comparable.
        """
        artifact = self.build(state)
        metrics = self.measure(state, artifact)
        if self.baseline_artifact is not None:
            timing = self.time({"baseline": self.baseline_artifact, "candidate": artifact})
            if timing and self.baseline_latency_ms:
                ratio = timing["candidate"].median_ms / timing["baseline"].median_ms
                metrics.latency_ms = ratio * self.baseline_latency_ms
        return metrics

    def context(self, **fields: Any) -> PassContext:
        """A `PassContext` whose `build`, `time` and `judge` are this measurer's."""
        return PassContext(target=self.target, builder=self.build, timer=self._median_ms, judger=self.judge,
                           measures_latency=self.measures_latency, **fields)

    def _median_ms(self, artifacts: Mapping[str, Any], runs: int) -> dict[str, float]:
        return {k: s.median_ms for k, s in self.time(artifacts, runs).items()}


def pass_context(target: Target, data: Optional[DataBundle] = None, latency_runs: int = 50,
                 **fields: Any) -> PassContext:
    """A `PassContext` for running a pass by hand, with the driver's `build` and `time` services.

    Artifacts are calibrated on ``data``'s calibration samples, as `kc.optimize` does.
    """
    calibration = data.calibration() if data is not None else None
    measures = target.runs_here()

    def builder(state: ModelState) -> Artifact:
        return build_artifact(state, target, calibration)

    def timer(artifacts: Mapping[str, Any], runs: int) -> dict[str, float]:
        if not measures or {a.kind for a in artifacts.values()} != {"tflite"}:
            return {}
        stats = compare_latency({k: a.data for k, a in artifacts.items()}, runs=runs, warmup=max(3, runs // 10))
        return {k: s.median_ms for k, s in stats.items()}

    return PassContext(target=target, data=data, builder=builder, timer=timer, measures_latency=measures, **fields)


def count(model: Any) -> tuple[int, Optional[int]]:
    """(parameters, MACs); MACs are None where they cannot be counted (some tf_keras models)."""
    if is_tf_keras_model(model):
        return count_tf_keras(model)
    cost = count_model(model)
    return int(cost.params), int(cost.macs)


def random_inputs(model: Any, n: int, seed: int) -> Any:
    """Standard-normal inputs shaped like the model's (batch dimension ``n``), for runs without data."""
    rng = np.random.default_rng(seed)
    arrays = []
    for tensor in model.inputs:
        shape = tuple(d if d is not None else 1 for d in tensor.shape[1:])
        arrays.append(rng.standard_normal((n,) + shape).astype(np.float32))
    return arrays[0] if len(arrays) == 1 else arrays
