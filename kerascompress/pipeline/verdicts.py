"""Keep or roll back: the rules that judge a pass's measured result against the run's constraints."""
from __future__ import annotations

from typing import Optional

from kerascompress.metrics.statistics import PairedDifference, describe_drop
from kerascompress.passes.base import Gate
from kerascompress.pipeline.report import Metrics
from kerascompress.pipeline.types import Constraints


def verdict(
    before: Metrics, after: Metrics, baseline: Metrics, ratio: Optional[float], gate: Gate, constraints: Constraints
) -> Optional[str]:
    """Why a pass must be rolled back, or None when it may stay."""
    if why := output_error_verdict(after, constraints):
        return why
    budget = constraints.max_accuracy_drop
    if baseline.accuracy is not None and after.accuracy is not None:
        drop = baseline.accuracy - after.accuracy
        if drop > budget:
            return (
                f"accuracy {after.accuracy:.4f} is {drop * 100:.2f} points below the float32 baseline "
                f"{baseline.accuracy:.4f}; the budget is {budget * 100:.2f} points"
                + (f" ({accuracy_noise_note(after, constraints)})" if accuracy_noise_note(after, constraints) else "")
            )
    elif after.top1_agreement is not None and 1 - after.top1_agreement > budget:
        return (
            f"top-1 agreement with the original fell to {after.top1_agreement:.4f} "
            f"(budget: {budget * 100:.2f} points of disagreement)"
        )
    if ratio is not None and ratio > constraints.max_slowdown:
        return f"{ratio:.2f}x the latency before it, i.e. slower (tolerance {constraints.max_slowdown:.2f}x)"
    if (
        "size" in gate.benefit
        and before.size_bytes is not None
        and after.size_bytes is not None
        and after.size_bytes > before.size_bytes * 1.01  # a few bytes of serialisation noise are not growth
    ):
        return f"the artifact grew from {before.size_bytes:,} to {after.size_bytes:,} bytes"
    if (
        gate.benefit == "compressed-size"
        and before.gzip_bytes is not None
        and after.gzip_bytes is not None
        and after.gzip_bytes >= before.gzip_bytes
    ):
        return (
            f"it was to buy compressed size only, but the gzip size went from {before.gzip_bytes:,} to "
            f"{after.gzip_bytes:,} bytes"
        )
    return None


def accuracy_noise_note(after: Metrics, constraints: Constraints) -> str:
    """The paired drop with its 95% interval, saying when the budget is within noise (empty without a drop)."""
    if after.accuracy_drop is None or after.accuracy_drop_se is None or not after.samples:
        return ""
    diff = PairedDifference(after.accuracy_drop, after.accuracy_drop_se, after.samples, 0, 0)
    return describe_drop(diff, constraints.max_accuracy_drop)


def constraints_met(final: Metrics, baseline: Metrics, c: Constraints) -> dict[str, bool]:
    """Each budget the run was given (or implies) -> met on the final model; unmeasurable ones are left out."""
    met: dict[str, bool] = {}
    if final.accuracy is not None and baseline.accuracy is not None:
        met["max_accuracy_drop"] = baseline.accuracy - final.accuracy <= c.max_accuracy_drop + 1e-12
    elif final.top1_agreement is not None:
        met["max_accuracy_drop"] = 1 - final.top1_agreement <= c.max_accuracy_drop + 1e-12
    met.update(output_error_met(final, c))
    size = c.size_budget_bytes(baseline.size_bytes)
    if size is not None and final.size_bytes is not None:
        met["size"] = final.size_bytes <= size
    latency = c.latency_budget_ms(baseline.latency_ms)
    if latency is not None and final.latency_ms is not None:
        met["latency"] = final.latency_ms <= latency
    if c.max_macs is not None and final.macs is not None:
        met["max_macs"] = final.macs <= c.max_macs
    return met


def output_error_verdict(after: Metrics, constraints: Constraints) -> Optional[str]:
    """Why a pass must be rolled back for the error of outputs that are not class scores, or None.

    Regression heads and other value outputs have no accuracy or top-1 agreement; their
    relative MSE against the original model is held to the accuracy budget instead:
    max_accuracy_drop=0.01 allows an error whose energy is 1% of the outputs' variance.
    """
    budget = constraints.max_accuracy_drop
    if after.relative_mse is None or after.relative_mse <= budget:
        return None
    return (
        f"output error against the original rose to a relative MSE of {after.relative_mse:.4g} (outputs that are "
        f"not class scores are judged by it; budget: {budget:.4g} of the outputs' variance)"
    )


def output_error_met(final: Metrics, c: Constraints) -> dict[str, bool]:
    """The accuracy budget, read as an output-error budget for value outputs (see `output_error_verdict`)."""
    if final.relative_mse is None or final.accuracy is not None:
        return {}
    return {"max_accuracy_drop": final.relative_mse <= c.max_accuracy_drop}
