"""The trade-off picture: every candidate the search measured, accuracy against latency and size.

Written as a PNG next to report.md (matplotlib, headless), with the float32 baseline,
the accuracy budget and any latency / size budget drawn, and the chosen model marked,
so a user sees at a glance what was given up for what.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from kerascompress.pipeline.report import Report


def search_candidates(report: Report) -> tuple[Optional[str], list[dict[str, Any]]]:
    """(step name, candidates) of the first step that measured search candidates, or (None, [])."""
    for step in report.steps:
        cands = step.details.get("candidates") if step.details else None
        if cands:
            return step.name, list(cands)
    return None, []


def write_search_plot(report: Report, path: Path, latency_budget_ms: Optional[float] = None,
                      size_budget_bytes: Optional[float] = None) -> Optional[Path]:
    """Draw the search's candidates into ``path`` (PNG); None when the run had no search."""
    name, cands = search_candidates(report)
    base = report.baseline
    if not cands or base is None:
        return None
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    def score(c: dict[str, Any]) -> Optional[float]:
        return c.get("accuracy") if c.get("accuracy") is not None else (
            None if c.get("accuracy_drop") is None else 1.0 - c["accuracy_drop"])

    base_score = base.accuracy if base.accuracy is not None else base.top1_agreement
    budget = float(report.constraints.get("max_accuracy_drop", 0.01))
    panels = [("latency_ms", "latency (ms, median on the target runtime)", base.latency_ms, latency_budget_ms),
              ("size_bytes", "size of the deployable file (bytes)", base.size_bytes, size_budget_bytes)]
    panels = [p for p in panels if any(c.get(p[0]) for c in cands)]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(6.2 * len(panels), 4.6), squeeze=False)
    for ax, (key, label, base_x, x_budget) in zip(axes[0], panels):
        for phase, marker in (("walk", "o"), ("final", "s"), ("refine", "^")):
            pts = [c for c in cands if c.get("phase") == phase and c.get(key) and score(c) is not None]
            ok = [c for c in pts if c.get("verdict") == "within budget"]
            bad = [c for c in pts if c.get("verdict") != "within budget"]
            for group, color, what in ((ok, "tab:green", "within budget"), (bad, "tab:red", "over budget")):
                if group:
                    ax.errorbar([c[key] for c in group], [score(c) for c in group],
                                yerr=[1.96 * (c.get("accuracy_drop_se") or 0.0) for c in group], fmt=marker,
                                color=color, alpha=0.8, capsize=2,
                                label=f"{'brief' if phase == 'walk' else 'long'} distillation ({phase}), {what}")
        chosen = [c for c in cands if c.get("chosen") and c.get(key)]
        if chosen:
            ax.plot([chosen[0][key]], [score(chosen[0])], marker="*", markersize=18, color="gold",
                    markeredgecolor="black", linestyle="none", label="chosen")
        if base_x and base_score is not None:
            ax.plot([base_x], [base_score], marker="D", color="black", linestyle="none", label="float32 baseline")
        if base_score is not None:
            ax.axhline(base_score - budget, color="gray", linestyle="--", label=f"accuracy budget (-{budget * 100:g} pt)")
        if x_budget:
            ax.axvline(x_budget, color="tab:blue", linestyle=":", label="budget")
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("validation accuracy" if base.accuracy is not None else "top-1 agreement with the original")
        ax.grid(True, alpha=0.3)
    axes[0][0].legend(fontsize=7, loc="lower right")
    fig.suptitle(f"{report.model_name} on {report.target.get('name')}: {name} candidates")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
