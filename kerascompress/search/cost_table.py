"""What a width costs: per-group tables of latency (measured) or MACs / bytes (counted).

A table holds, for each prunable group, the cost of the model with that group narrowed
to each of a few widths and every other group whole. The cost of a configuration is
predicted additively: the full model's cost plus each group's change. NetAdapt builds
its per-layer latency tables the same way; the prediction ignores interactions between
groups, which the search corrects by measuring the candidates it keeps.

Tables are measured on the target's runtime at the precision the model ships in
(float32 ratios mislead on an int8 target), read from a JSON file measured on the
device with ``kerascompress profile``, or, only without either, estimated from MACs
and labelled as an estimate.
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
from kerascompress.graph.counting import count_model
from kerascompress.graph.model_graph import ModelGraph
from kerascompress.graph.prune_channels import cost_fractions, prune_channels, removed_units
from kerascompress.search.widths import keep_for, pruned_model

#: Units a table may be in.
UNITS = ("ms", "macs", "bytes")
#: Format version of the JSON file.
FORMAT = 1


@dataclasses.dataclass
class CostTable:
    """Per-group cost curves of one model on one target at one precision.

    ``curves`` maps a group id to ``(widths, costs)``, widths descending from the full
    width; ``base`` is the full model's cost. ``source`` says how it was obtained
    ("measured here", "measured on the device", "estimate from MACs"...).
    """

    signature: str
    unit: str
    base: float
    curves: dict[int, tuple[list[int], list[float]]]
    source: str
    target: str = ""
    precision: str = ""
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def is_estimate(self) -> bool:
        return self.source.startswith("estimate")

    def group_cost(self, gid: int, width: int) -> float:
        """The model's cost with only group ``gid`` at ``width`` (linear between measured widths)."""
        if gid not in self.curves:
            return self.base
        widths, costs = self.curves[gid]
        return float(np.interp(width, widths[::-1], costs[::-1]))

    def predict(self, widths: Mapping[int, int]) -> float:
        """Additive prediction of a configuration's cost."""
        return self.base + sum(self.group_cost(g, w) - self.base for g, w in widths.items())

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "signature": self.signature, "unit": self.unit, "base": self.base,
            "source": self.source, "target": self.target, "precision": self.precision, "notes": self.notes,
            "curves": {str(g): {"widths": list(map(int, w)), "cost": list(map(float, c))}
                       for g, (w, c) in self.curves.items()},
        }

    def save(self, path: Union[str, Path]) -> Path:
        """Write the table as JSON (atomically)."""
        return write_text_atomic(path, json.dumps(self.to_dict(), indent=2))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], origin: str = "<dict>") -> "CostTable":
        try:
            if int(d.get("format", 0)) != FORMAT:
                raise ConfigError(f"{origin}: latency table format {d.get('format')!r}, this version reads {FORMAT}")
            curves = {int(g): ([int(v) for v in c["widths"]], [float(v) for v in c["cost"]])
                      for g, c in d["curves"].items()}
            unit = str(d["unit"])
            if unit not in UNITS:
                raise ConfigError(f"{origin}: unit {unit!r} is not one of {', '.join(UNITS)}")
            return cls(str(d["signature"]), unit, float(d["base"]), curves, str(d["source"]),
                       str(d.get("target", "")), str(d.get("precision", "")), list(d.get("notes", [])))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{origin}: not a kerascompress latency table ({type(exc).__name__}: {exc}); "
                              "make one with `kerascompress profile`") from exc

    @classmethod
    def load(cls, path: Union[str, Path]) -> "CostTable":
        """Read a table written by `save` (e.g. by ``kerascompress profile`` on the device)."""
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"latency table {str(p)!r} does not exist; make one with `kerascompress profile`")
        try:
            data = json.loads(p.read_text())
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{p}: not valid JSON: {exc}") from exc
        return cls.from_dict(data, str(p))

    def check_matches(self, signature: str, what: str = "the model") -> None:
        """Refuse a table measured for another model (its groups or widths differ)."""
        if signature != self.signature:
            raise ConfigError(
                f"the latency table was measured for a different model (signature {self.signature[:12]}, "
                f"{what} has {signature[:12]}): run `kerascompress profile` on this model"
            )


def model_signature(model: keras.Model, groups: ChannelGroups) -> str:
    """A digest of what a table depends on: input shapes and the prunable groups (sizes, producers)."""
    parts = [repr([tuple(t.shape[1:]) for t in model.inputs])]
    for g in groups.prunable:
        parts.append(f"{g.id}:{g.size}:{','.join(g.producers)}")
    return hashlib.sha256("|".join(parts).encode()).hexdigest()


def sample_widths(steps: Sequence[int], max_points: int) -> list[int]:
    """At most ``max_points`` of ``steps`` (widest first), always keeping the first and the last."""
    if len(steps) <= max_points:
        return list(steps)
    idx = np.unique(np.round(np.linspace(0, len(steps) - 1, max_points)).astype(int))
    return [steps[i] for i in idx]


def measured_table(
    graph: ModelGraph,
    groups: ChannelGroups,
    scores: Mapping[int, np.ndarray],
    steps: Mapping[int, Sequence[int]],
    build: Callable[[keras.Model], Any],
    time: Callable[[Mapping[str, Any]], Mapping[str, float]],
    signature: str,
    source: str,
    max_points: int = 6,
    chunk: int = 24,
    name: str = "model",
    target: str = "",
    precision: str = "",
    on_model: Optional[Callable[[int, int, keras.Model], None]] = None,
) -> CostTable:
    """Latency curves measured on the target's runtime.

    ``build(model)`` exports a model as the target runs it; ``time(label -> artifact)``
    returns the median milliseconds of each, timed interleaved in one run. Variants are
    timed in chunks of ``chunk`` that each include the full model, and every latency is
    taken relative to the full model of its own chunk, so drift between chunks cancels
    and only a chunk's artifacts are held in memory. ``on_model(group, width, model)``
    sees each narrowed Keras model once (e.g. to measure its sensitivity) before it is
    dropped.
    """
    full = build(graph.to_keras(name=name))
    plan = {gid: sample_widths(list(ws), max_points) for gid, ws in steps.items()}
    todo = [(gid, w) for gid, ws in plan.items() for w in ws[1:]]
    relative: dict[tuple[int, int], float] = {}
    base_ms: list[float] = []
    for start in range(0, max(1, len(todo)), max(1, chunk)):
        artifacts: dict[str, Any] = {"full": full}
        for gid, w in todo[start:start + chunk]:
            model = pruned_model(graph, groups, scores, {gid: w}, name)
            if on_model is not None:
                on_model(gid, w, model)
            artifacts[f"g{gid}w{w}"] = build(model)
            del model
        ms = time(artifacts)
        base_ms.append(float(ms["full"]))
        for gid, w in todo[start:start + chunk]:
            relative[(gid, w)] = float(ms[f"g{gid}w{w}"]) / float(ms["full"])
    base = float(np.median(base_ms))
    curves = {gid: (ws, [base] + [relative[(gid, w)] * base for w in ws[1:]]) for gid, ws in plan.items()}
    return CostTable(signature, "ms", base, curves, source, target, precision)


def counted_table(
    graph: ModelGraph,
    groups: ChannelGroups,
    steps: Mapping[int, Sequence[int]],
    signature: str,
    unit: str = "macs",
    bytes_per_param: float = 4.0,
) -> CostTable:
    """MAC or byte curves counted from the graph, no runtime involved.

    Bytes are exact: the weights of the pruned graph, counted once per layer, times
    ``bytes_per_param``. MACs scale each layer's count by the fraction of its input and
    output channels kept (biases and other small terms are not rescaled).
    """
    if unit not in ("macs", "bytes"):
        raise ConfigError(f"a counted table is in macs or bytes, not {unit!r}")
    ones = {g.id: np.arange(g.size) for g in groups.prunable}
    curves = {}
    if unit == "bytes":
        base = _weights_of(graph) * float(bytes_per_param)
        for gid, ws in steps.items():
            costs = [_weights_of(prune_channels(graph, groups, keep_for(ones, {gid: w}))) * float(bytes_per_param)
                     for w in ws]
            curves[gid] = (list(ws), costs)
        return CostTable(signature, unit, base, curves, f"counted parameters x {bytes_per_param:g} bytes")
    cost = count_model(graph)
    per_node = np.array([cost.nodes[n].macs if n in cost.nodes else 0 for n in groups.order], float)
    base = float(per_node.sum())
    for gid, ws in steps.items():
        costs = []
        for w in ws:
            fr = cost_fractions(groups, graph, removed_units(groups, keep_for(ones, {gid: w})))
            costs.append(float(np.dot(per_node, [fr[n] for n in groups.order])))
        curves[gid] = (list(ws), costs)
    return CostTable(signature, unit, base, curves, "counted MACs")


def _weights_of(graph: ModelGraph) -> float:
    """Number of weight values in a graph, each layer counted once (shared layers are one layer)."""
    seen: dict[str, int] = {}
    for node in graph.nodes.values():
        if node.layer_name not in seen:
            seen[node.layer_name] = int(sum(np.size(w) for w in (node.weights or [])))
    return float(sum(seen.values()))


def estimate_from_macs(table: CostTable) -> CostTable:
    """A MAC table relabelled as a latency estimate (proportional to MACs; not milliseconds)."""
    return dataclasses.replace(table, source="estimate from MACs (latency assumed proportional to MACs)",
                               notes=table.notes + ["not measured: no latency table and the target does not run "
                                                    "here; run `kerascompress profile` on the device for a real one"])


__all__ = ["CostTable", "UNITS", "counted_table", "estimate_from_macs", "measured_table", "model_signature",
           "sample_widths"]
