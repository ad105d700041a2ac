"""What a configuration of widths costs on the target: a latency model fitted to measurements.

Latency is modelled as ``a + sum_k b_k * MACs_k`` over layer kinds k (convolution,
depthwise, dense, other), fitted with non-negative least squares to the measured
latency of a handful of whole configurations (uniform and random widths) exported at
the precision the model ships in. Measuring each group alone and adding the deltas,
as NetAdapt's tables do, was tried and rejected: on a small residual CNN under
XNNPACK int8 the deltas of groups narrowed one at a time summed to 41-87% more than
the joint saving (caches and kernel tiling interact), while this fit predicted
whole configurations within 5-7% (benchmarks/results/search.md records the fit error
of each run). A model's fit error is kept with it and reported.

Without a measurement (a target this host cannot stand in for and no table from
``kerascompress profile``), cost is counted: MACs, labelled as an estimate. For a size
objective it is the weight bytes at the shipping precision.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import keras
import numpy as np

from kerascompress.errors import ConfigError
from kerascompress.fileio import write_text_atomic
from kerascompress.graph.channel_groups import ChannelGroups
from kerascompress.graph.model_graph import ModelGraph
from kerascompress.search.features import CostFeatures
from kerascompress.search.widths import pruned_model

#: Units a cost may be in.
UNITS = ("ms", "macs", "bytes")
#: Format version of the JSON file.
FORMAT = 2


@dataclasses.dataclass
class CostModel:
    """Cost of any width configuration of one model on one target at one precision.

    ``terms`` names the features (``"const"``, ``"macs:conv"``, ``"params"``...) and
    ``coef`` their weights; ``samples`` are the measurements it was fitted on
    (widths -> cost), ``fit_error`` their mean relative error under leave-one-out.
    """

    signature: str
    unit: str
    terms: list[str]
    coef: list[float]
    source: str
    target: str = ""
    precision: str = ""
    samples: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    fit_error: Optional[float] = None
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def is_estimate(self) -> bool:
        return self.source.startswith("estimate")

    def predict(self, features: CostFeatures, widths: Mapping[int, int]) -> float:
        """The cost of ``widths`` (group id -> channels kept; others whole)."""
        return float(np.dot(self.coef, _values(features, widths, self.terms)))

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "signature": self.signature, "unit": self.unit, "terms": self.terms,
                "coef": self.coef, "source": self.source, "target": self.target, "precision": self.precision,
                "samples": self.samples, "fit_error": self.fit_error, "notes": self.notes}

    def save(self, path: Union[str, Path]) -> Path:
        """Write the model and its measurements as JSON (atomically)."""
        return write_text_atomic(path, json.dumps(self.to_dict(), indent=2))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], origin: str = "<dict>") -> "CostModel":
        try:
            if int(d.get("format", 0)) != FORMAT:
                raise ConfigError(f"{origin}: latency table format {d.get('format')!r}; this version reads {FORMAT}: "
                                  "measure it again with `kerascompress profile`")
            unit = str(d["unit"])
            if unit not in UNITS:
                raise ConfigError(f"{origin}: unit {unit!r} is not one of {', '.join(UNITS)}")
            terms, coef = [str(t) for t in d["terms"]], [float(c) for c in d["coef"]]
            if len(terms) != len(coef):
                raise ConfigError(f"{origin}: {len(terms)} terms but {len(coef)} coefficients")
            return cls(str(d["signature"]), unit, terms, coef, str(d["source"]), str(d.get("target", "")),
                       str(d.get("precision", "")), list(d.get("samples", [])),
                       None if d.get("fit_error") is None else float(d["fit_error"]), list(d.get("notes", [])))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{origin}: not a kerascompress latency table ({type(exc).__name__}: {exc}); "
                              "make one with `kerascompress profile`") from exc

    @classmethod
    def load(cls, path: Union[str, Path]) -> "CostModel":
        """Read a model written by `save` (e.g. by ``kerascompress profile`` on the device)."""
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"latency table {str(p)!r} does not exist; make one with `kerascompress profile`")
        try:
            data = json.loads(p.read_text())
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{p}: not valid JSON: {exc}") from exc
        return cls.from_dict(data, str(p))

    def check_matches(self, signature: str) -> None:
        """Refuse a table measured for another model (its groups or widths differ)."""
        if signature != self.signature:
            raise ConfigError(
                f"the latency table was measured for a different model (signature {self.signature[:12]}, this "
                f"model's is {signature[:12]}): run `kerascompress profile` on this model"
            )


def _values(features: CostFeatures, widths: Mapping[int, int], terms: Sequence[str]) -> np.ndarray:
    by_kind = features.macs_by_kind(widths) if any(t.startswith("macs:") for t in terms) else {}
    out = []
    for t in terms:
        if t == "const":
            out.append(1.0)
        elif t == "macs":
            out.append(features.total_macs(widths))
        elif t == "params":
            out.append(features.total_params(widths))
        elif t.startswith("macs:"):
            out.append(by_kind.get(t[5:], 0.0))
        else:
            raise ConfigError(f"unknown cost term {t!r}")
    return np.array(out, float)


def model_signature(model: keras.Model, groups: ChannelGroups) -> str:
    """A digest of what a latency table depends on: input shapes and the prunable groups."""
    parts = [repr([tuple(t.shape[1:]) for t in model.inputs])]
    for g in groups.prunable:
        parts.append(f"{g.id}:{g.size}:{','.join(g.producers)}")
    return hashlib.sha256("|".join(parts).encode()).hexdigest()


def nonnegative_least_squares(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """min ||a x - b|| with x >= 0 (active set: drop the most negative coefficient, refit)."""
    active = list(range(a.shape[1]))
    x = np.zeros(a.shape[1])
    while active:
        sol, *_ = np.linalg.lstsq(a[:, active], b, rcond=None)
        if (sol >= 0).all():
            x[:] = 0.0
            x[active] = sol
            return x
        del active[int(np.argmin(sol))]
    return x


def fit(features: CostFeatures, samples: Sequence[Mapping[str, Any]], terms: Sequence[str]) -> tuple[list[float], float]:
    """(coefficients, leave-one-out mean relative error) of a linear cost model on measured samples."""
    a = np.array([_values(features, _widths(s), terms) for s in samples])
    b = np.array([float(s["cost"]) for s in samples])
    scale = np.maximum(np.abs(a).max(0), 1e-12)  # condition the columns; undone below
    coef = nonnegative_least_squares(a / scale, b) / scale
    errors = []
    for i in range(len(b)):
        keep = np.arange(len(b)) != i
        c = nonnegative_least_squares(a[keep] / scale, b[keep]) / scale
        errors.append(abs(float(a[i] @ c) - b[i]) / max(abs(b[i]), 1e-12))
    return [float(c) for c in coef], float(np.mean(errors)) if errors else float("nan")


def _widths(sample: Mapping[str, Any]) -> dict[int, int]:
    return {int(g): int(w) for g, w in sample["widths"].items()}


def sample_configurations(steps: Mapping[int, Sequence[int]], n_random: int, seed: int) -> list[dict[int, int]]:
    """Whole configurations to measure: uniform fractions of every group, then random widths per group."""
    configs: list[dict[int, int]] = [{}]
    for fraction in (0.75, 0.5, 0.375, 0.25):
        configs.append({g: min(ws, key=lambda w: abs(w - ws[0] * fraction)) for g, ws in steps.items()})
    rng = np.random.default_rng(seed)
    for _ in range(n_random):
        configs.append({g: int(ws[rng.integers(len(ws))]) for g, ws in steps.items()})
    unique, seen = [], set()
    for c in configs:
        key = tuple(sorted((g, w) for g, w in c.items() if w != steps[g][0]))
        if key not in seen:
            seen.add(key)
            unique.append({g: w for g, w in key})
    return unique


def measured_model(
    graph: ModelGraph,
    groups: ChannelGroups,
    features: CostFeatures,
    scores: Mapping[int, np.ndarray],
    steps: Mapping[int, Sequence[int]],
    build: Callable[[keras.Model], Any],
    time: Callable[[Mapping[str, Any]], Mapping[str, float]],
    signature: str,
    source: str,
    n_random: int = 12,
    chunk: int = 12,
    seed: int = 0,
    name: str = "model",
    target: str = "",
    precision: str = "",
) -> CostModel:
    """Measure whole configurations on the target's runtime and fit the latency model.

    ``build(model)`` exports a model as the target runs it; ``time(label -> artifact)``
    returns each one's median milliseconds, timed interleaved in one run. Configurations
    are timed in chunks that each include the full model; every latency is taken
    relative to its own chunk's full model (so drift between chunks cancels) and scaled
    by the full model's median over chunks.
    """
    configs = sample_configurations(steps, n_random, seed)
    full = build(graph.to_keras(name=name))
    relative: dict[int, float] = {}
    base_ms: list[float] = []
    todo = list(range(1, len(configs)))
    for start in range(0, max(1, len(todo)), max(1, chunk)):
        part = todo[start:start + chunk]
        artifacts: dict[str, Any] = {"full": full}
        for i in part:
            artifacts[f"c{i}"] = build(pruned_model(graph, groups, scores, configs[i], name))
        ms = time(artifacts)
        base_ms.append(float(ms["full"]))
        for i in part:
            relative[i] = float(ms[f"c{i}"]) / float(ms["full"])
    base = float(np.median(base_ms))
    samples = [{"widths": {}, "cost": base}] + [
        {"widths": {str(g): int(w) for g, w in configs[i].items()}, "cost": relative[i] * base} for i in todo]
    terms = ["const"] + [f"macs:{k}" for k in features.kinds]
    coef, error = fit(features, samples, terms)
    return CostModel(signature, "ms", terms, coef, source, target, precision, samples, error)


def counted_model(features: CostFeatures, signature: str, unit: str = "macs", bytes_per_param: float = 4.0) -> CostModel:
    """Cost counted from the graph: MACs, or weight bytes at ``bytes_per_param``; no runtime involved."""
    if unit == "macs":
        return CostModel(signature, "macs", ["macs"], [1.0], "counted MACs")
    if unit == "bytes":
        return CostModel(signature, "bytes", ["params"], [float(bytes_per_param)],
                         f"counted weights x {bytes_per_param:g} bytes")
    raise ConfigError(f"a counted cost is in macs or bytes, not {unit!r}")


def estimate_from_macs(model: CostModel) -> CostModel:
    """A MAC count relabelled as a latency estimate (proportional to MACs; not milliseconds)."""
    return dataclasses.replace(model, source="estimate from MACs (latency assumed proportional to MACs)",
                               notes=model.notes + ["not measured: no latency table and the target does not run "
                                                    "here; run `kerascompress profile` on the device for a real one"])


__all__ = ["CostModel", "UNITS", "counted_model", "estimate_from_macs", "fit", "measured_model", "model_signature",
           "nonnegative_least_squares", "sample_configurations"]
