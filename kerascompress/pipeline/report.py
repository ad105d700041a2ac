"""The optimization report: what each pass did, why, and what it bought.

Every pass appears once with a status (applied, skipped, rolled back, failed), the
reason, and the metrics before and after it, so a user can see which step paid and
which did not without re-running anything.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Optional

from kerascompress.fileio import write_text_atomic

STATUSES = ("applied", "skipped", "rolled back", "failed")


@dataclasses.dataclass
class Metrics:
    """Measurements of one model state, on the artifact the target will run."""

    params: int
    macs: Optional[int]  # None: not countable for this model (e.g. a tf_keras layer not modelled)
    precision: str
    size_bytes: Optional[int] = None  # the deployable artifact (.tflite or .onnx)
    gzip_bytes: Optional[int] = None
    latency_ms: Optional[float] = None  # median on the target runtime, when it runs here
    latency_p90_ms: Optional[float] = None
    accuracy: Optional[float] = None  # on the validation data (labelled)
    top1_agreement: Optional[float] = None  # with the original Keras model
    max_abs_error: Optional[float] = None  # against the original Keras model's outputs
    relative_mse: Optional[float] = None  # outputs that are not class scores: error / variance vs the original
    runtime: str = ""
    samples: Optional[int] = None  # validation samples the accuracy was measured on
    accuracy_se: Optional[float] = None  # binomial standard error of `accuracy`
    #: Paired against the float32 baseline on the same samples (positive = worse), and its standard error.
    accuracy_drop: Optional[float] = None
    accuracy_drop_se: Optional[float] = None


@dataclasses.dataclass
class StepRecord:
    """One pass of the pipeline and its outcome."""

    name: str
    config: dict[str, Any]
    status: str
    reason: str = ""
    benefit: str = ""  # what the target lets this pass buy: size+latency, size, ...
    before: Optional[Metrics] = None
    after: Optional[Metrics] = None
    latency_ratio: Optional[float] = None  # after / before, timed interleaved in one run
    seconds: float = 0.0
    details: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")


@dataclasses.dataclass
class Report:
    """The whole run: target, constraints, baseline, each step, final result, artifacts."""

    model_name: str
    target: dict[str, Any]
    constraints: dict[str, Any]
    baseline: Optional[Metrics] = None
    final: Optional[Metrics] = None
    final_latency_ratio: Optional[float] = None  # final / baseline, interleaved
    steps: list[StepRecord] = dataclasses.field(default_factory=list)
    artifacts: dict[str, Optional[str]] = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)
    constraints_met: dict[str, bool] = dataclasses.field(default_factory=dict)
    #: File names (next to report.md) of pictures, e.g. {"search": "search.png"}.
    figures: dict[str, str] = dataclasses.field(default_factory=dict)

    def step(self, name: str) -> StepRecord:
        """The first step named ``name`` (KeyError if none)."""
        for s in self.steps:
            if s.name == name:
                return s
        raise KeyError(f"no step named {name!r}; steps: {[s.name for s in self.steps]}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self, path: Optional[Path] = None) -> str:
        text = json.dumps(self.to_dict(), indent=2, default=_jsonable)
        if path is not None:
            write_text_atomic(path, text)
        return text

    def to_markdown(self) -> str:
        lines = [f"# kerascompress report: {self.model_name}", ""]
        t = self.target
        lines.append(f"Target: **{t.get('name')}** ({t.get('runtime')}, {t.get('device')}, {t.get('arch')})")
        lines.append("")
        lines.append("| step | status | precision | params | MACs | bytes | gzip | latency ms | latency ratio | accuracy | top-1 agree | rel. MSE | why |")
        lines.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        if self.baseline is not None:
            lines.append(_row("baseline (float32)", "", self.baseline, None, ""))
        for s in self.steps:
            # applied and rolled-back steps show what the pass produced; skipped ones the state they saw
            m = s.after if s.after is not None else s.before
            why = s.reason + (f" [buys: {s.benefit}]" if s.benefit and s.status == "applied" else "")
            lines.append(_row(s.name, s.status, m, s.latency_ratio, why))
        if self.final is not None:
            lines.append(_row("**final**", "", self.final, self.final_latency_ratio, "ratio against baseline"))
        lines += _search_section(self)
        if self.constraints_met:
            lines += ["", "Constraints: " + ", ".join(f"{k}: {'met' if v else 'NOT met'}" for k, v in self.constraints_met.items())]
        if self.artifacts:
            lines += ["", "Artifacts:"] + [f"- {k}: {v if v else 'not produced'}" for k, v in self.artifacts.items()]
        if self.notes:
            lines += ["", "Notes:"] + [f"- {n}" for n in self.notes]
        return "\n".join(lines) + "\n"


def _search_section(report: "Report") -> list[str]:
    """Every candidate a search measured, the chosen one marked, and a link to the picture."""
    out: list[str] = []
    for step in report.steps:
        cands = (step.details or {}).get("candidates")
        if not cands:
            continue
        cm = step.details.get("cost_model", {})
        out += ["", f"## {step.name}: candidates", ""]
        out.append(f"Cost model: {cm.get('source', '?')} (unit: {cm.get('unit', '?')}). Accuracy budget: "
                   f"{step.details.get('budget_points', '?')} points below the float32 baseline, judged on the "
                   "validation data, paired; ± is a 95% interval.")
        if step.details.get("nothing_passed"):
            out.append(f"**No candidate passed**: {step.details['nothing_passed']}.")
        out += [f"Note: {note}." for note in step.details.get("data_notes", [])]
        out += ["", "| # | phase | widths | predicted | latency ms | bytes | accuracy | drop (points) | verdict |",
                "|---|---|---|---|---|---|---|---|---|"]
        for c in cands:
            drop, se = c.get("accuracy_drop"), c.get("accuracy_drop_se")
            drop_text = "-" if drop is None else f"{drop * 100:+.2f}" + (f" ± {1.96 * se * 100:.2f}" if se else "")
            widths = " ".join(str(w) for w in (c.get("widths") or {}).values())
            verdict = c.get("verdict", "") + (" **(chosen)**" if c.get("chosen") else "")
            out.append(f"| {c.get('index')} | {c.get('phase')} | {widths} | {_fmt(c.get('predicted_cost'), '.4g')} | "
                       f"{_fmt(c.get('latency_ms'), '.4f')} | {_fmt(c.get('size_bytes'), ',')} | "
                       f"{_fmt(c.get('accuracy'), '.4f')} | {drop_text} | {verdict} |")
        if report.figures.get("search"):
            out += ["", f"![accuracy against latency and size]({report.figures['search']})"]
    return out


def _fmt(v: Any, spec: str = "") -> str:
    if v is None:
        return "-"
    return format(v, spec) if spec else str(v)


def _row(name: str, status: str, m: Optional[Metrics], ratio: Optional[float], why: str) -> str:
    if m is None:
        cells = ["-"] * 10
    else:
        cells = [
            m.precision,
            _fmt(m.params, ","),
            _fmt(m.macs, ","),
            _fmt(m.size_bytes, ","),
            _fmt(m.gzip_bytes, ","),
            _fmt(m.latency_ms, ".3f"),
            _fmt(ratio, ".2f") + ("x" if ratio is not None else ""),
            _fmt(m.accuracy, ".4f"),
            _fmt(m.top1_agreement, ".4f"),
            _fmt(m.relative_mse, ".3g"),
        ]
    return "| " + " | ".join([name, status] + cells + [why.replace("|", "/")]) + " |"


def _jsonable(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    return str(o)
