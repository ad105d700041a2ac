"""The pass protocol: what every compression pass declares, asks and returns.

A pass maps a `ModelState` (a Keras model plus the precision it will be exported at)
to a new one. Before it runs the driver asks `Pass.gate(target, state)`; a pass the
target cannot use is skipped with the gate's reason. Passes know nothing of export
formats: precision is carried as a `PrecisionPlan` the exporters read, and a pass that
needs an artifact or a timing asks its `PassContext` (`build`, `time`), whose services
the driver supplies.
"""
from __future__ import annotations

import abc
import dataclasses
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Protocol, Sequence

import keras

from kerascompress.data.bundle import DataBundle
from kerascompress.errors import KerasCompressError
from kerascompress.models.kinds import is_tf_keras_model
from kerascompress.models.subclassed import layer_graph_missing
from kerascompress.quant.plan import PrecisionPlan
from kerascompress.targets.target import Target
from kerascompress.training.finetune import model_signature

#: What a pass is expected to buy on a target. "compressed-size": only the gzip/zip size
#: of the artifact falls (clustering, sparsity on a dense runtime); the raw file does not.
BENEFITS = ("size+latency", "size", "compressed-size", "latency", "accuracy", "none")


@dataclasses.dataclass
class ModelState:
    """A Keras model together with the precision plan it will be exported at."""

    model: keras.Model
    precision: PrecisionPlan = dataclasses.field(default_factory=PrecisionPlan)

    def replace(self, **changes: Any) -> "ModelState":
        return dataclasses.replace(self, **changes)


@dataclasses.dataclass(frozen=True)
class Gate:
    """A target's answer to a pass: may it run, and what will it buy there."""

    allowed: bool
    reason: str = ""
    benefit: str = "size+latency"  # one of BENEFITS

    @classmethod
    def allow(cls, benefit: str = "size+latency", reason: str = "") -> "Gate":
        return cls(True, reason, benefit)

    @classmethod
    def refuse(cls, reason: str) -> "Gate":
        return cls(False, reason, "none")


class BuiltArtifact(Protocol):
    """What a pass may read of an artifact the driver built for it (see `PassContext.build`)."""

    kind: str  # "tflite" or "onnx"
    precision: str

    @property
    def size_bytes(self) -> int: ...

    def predict(self, x: Any) -> Any:
        """Outputs on ``x``, run on this host's runtime for the artifact."""


class Judgement(Protocol):
    """The driver's verdict data on a candidate (see `PassContext.judge`): the report's `Metrics`."""

    accuracy: Optional[float]
    top1_agreement: Optional[float]
    accuracy_drop: Optional[float]  # paired against the float32 baseline on the validation data
    accuracy_drop_se: Optional[float]
    latency_ms: Optional[float]
    size_bytes: Optional[int]
    macs: Optional[int]


Builder = Callable[["ModelState"], BuiltArtifact]
#: (label -> artifact, timed runs) -> label -> median milliseconds, timed interleaved.
Timer = Callable[[Mapping[str, BuiltArtifact], int], Mapping[str, float]]


@dataclasses.dataclass
class PassContext:
    """What a pass may use while it runs, besides the state it transforms.

    ``builder`` and ``timer`` are the driver's services (`kc.optimize` wires them; for a
    pass run by hand, `kerascompress.pipeline.measure.Measurer.context` makes a context
    that has them). A pass calls `build` and `time`, never an exporter or a runtime.
    """

    target: Target
    data: Optional[DataBundle] = None
    teacher: Optional[keras.Model] = None  # the caller's original model (never modified)
    progress: Callable[[str], None] = print
    seed: int = 0
    constraints: Any = None  # the run's `Constraints` (e.g. the accuracy budget a search aims at)
    builder: Optional[Builder] = None
    timer: Optional[Timer] = None
    judger: Optional[Callable[["ModelState"], Judgement]] = None
    #: A latency table measured on the device (`kerascompress profile`), as given to `optimize`.
    latency_table: Any = None
    #: The driver's measurement of the float32 baseline (relative budgets are fractions of it).
    baseline: Any = None
    #: True when this host can stand in for the target, so `time` returns real timings.
    measures_latency: bool = False
    #: How fine-tuning runs (`kc.optimize`'s ``strategy``, ``callbacks``, ``mixed_precision``):
    #: passes hand these to `finetune` through `fine_tuning`.
    strategy: Any = None
    callbacks: Sequence[Any] = ()
    mixed_precision: Optional[str] = None
    #: This step's checkpoint folder (None: no checkpoints), whether to continue from it, and
    #: how many steps apart checkpoints are written besides every epoch end.
    checkpoint_dir: Optional[Path] = None
    resume: bool = False
    checkpoint_every: Optional[int] = None

    def fine_tuning(self, model: Any, name: str = "finetune", **overrides: Any) -> dict[str, Any]:
        """`finetune`'s settings for one fine-tuning of ``model`` in this pass: how it runs, where it checkpoints.

        Each fine-tuning checkpoints into its own folder, named by ``name`` and by the
        model's architecture, so a resumed run continues only fine-tunings of the same
        model (a search that picks another candidate after a restart trains it afresh).
        ``overrides`` replace settings (e.g. ``mixed_precision=None`` where float32 is needed).
        """
        settings: dict[str, Any] = {"strategy": self.strategy, "callbacks": list(self.callbacks),
                                    "mixed_precision": self.mixed_precision}
        if self.checkpoint_dir is not None:
            settings["checkpoint_dir"] = Path(self.checkpoint_dir) / f"{name}-{model_signature(model)}"
            settings["resume"] = self.resume
            settings["checkpoint_every"] = self.checkpoint_every
        settings.update(overrides)
        return settings

    def build(self, state: "ModelState") -> BuiltArtifact:
        """The artifact the target would run for ``state`` (at its precision plan)."""
        if self.builder is None:
            raise KerasCompressError(
                "this pass needs artifacts built for the target: run it through kc.optimize, or make its context "
                "with kerascompress.pipeline.measure.Measurer(...).context()"
            )
        return self.builder(state)

    def judge(self, state: "ModelState") -> Judgement:
        """The driver's measurement of ``state`` on the validation data (which passes never see).

        Accuracy and its paired drop against the float32 baseline, size, MACs, and latency
        where this host stands in for the target (timed interleaved with the baseline).
        A search decides with it exactly as the driver will judge its result.
        """
        if self.judger is None:
            raise KerasCompressError(
                "this pass needs the driver's verdicts on validation data: run it through kc.optimize, or make its "
                "context with kerascompress.pipeline.measure.Measurer(...).context()"
            )
        return self.judger(state)

    def time(self, artifacts: Mapping[str, BuiltArtifact], runs: int = 50) -> dict[str, float]:
        """Median latency (ms) of each artifact on the target's runtime, all timed interleaved in one run.

        Empty when this host cannot stand in for the target (``measures_latency`` False).
        """
        if not self.measures_latency or self.timer is None:
            return {}
        return dict(self.timer(artifacts, runs))


@dataclasses.dataclass
class PassOutput:
    """A pass's result: the new state and details for the report (JSON-serialisable)."""

    state: ModelState
    details: dict[str, Any] = dataclasses.field(default_factory=dict)


class Pass(abc.ABC):
    """A compression step. Subclasses set ``name`` and implement `gate` and `apply`.

    ``apply`` must not modify ``state.model``: it builds and returns a new model (or the
    same object when it changes only the precision plan).
    """

    name: str = "pass"
    #: True when the pass needs data (calibration or fine-tuning) to run.
    needs_data: bool = False
    #: True when it needs labelled training data (fine-tuning).
    needs_labels: bool = False
    #: None when `apply` also handles tf_keras (Keras 2) models; otherwise why not. The
    #: driver skips the pass on a tf_keras model with this reason instead of letting it fail.
    tf_keras_unsupported: Optional[str] = "this pass needs a Keras 3 model (it reads the Keras 3 layer graph)"
    #: True when `apply` reads or edits the model's layer graph (Functional/Sequential). The
    #: driver skips such a pass on a model without one (a subclassed model) with the reason.
    needs_layer_graph: bool = True
    #: True when the report should show what the exported file holds after this pass (values
    #: per kernel, zeros): the driver reads them back from the artifact it built, and again
    #: from the final artifact, since a later int8 pass re-quantizes the weights.
    reports_weight_values: bool = False

    @abc.abstractmethod
    def gate(self, target: Target, state: ModelState) -> Gate:
        """Ask the target whether this pass can run on it and what it buys there."""

    @abc.abstractmethod
    def apply(self, state: ModelState, ctx: PassContext) -> PassOutput:
        """Run the pass and return the new state."""

    def unsupported_reason(self, model: Any) -> Optional[str]:
        """Why this pass cannot run on ``model`` whatever the target (None: it can); the driver skips it then."""
        if is_tf_keras_model(model):
            return self.tf_keras_unsupported
        missing = layer_graph_missing(model) if self.needs_layer_graph else None
        if missing:
            return f"needs the layer graph, and {missing}; Quantize, Cluster and Sparsity work without it"
        return None

    def config(self) -> dict[str, Any]:
        """The pass's parameters, for the report."""
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"
