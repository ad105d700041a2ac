"""Keep or roll back: the rules that judge a pass's measured result against the run's constraints."""
from __future__ import annotations

from typing import Optional

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


def constraints_met(final: Metrics, baseline: Metrics, c: Constraints) -> dict[str, bool]:
    met: dict[str, bool] = {}
    if final.accuracy is not None and baseline.accuracy is not None:
        met["max_accuracy_drop"] = baseline.accuracy - final.accuracy <= c.max_accuracy_drop
    met.update(output_error_met(final, c))
    if c.max_size_bytes is not None and final.size_bytes is not None:
        met["max_size_bytes"] = final.size_bytes <= c.max_size_bytes
    if c.max_latency_ms is not None and final.latency_ms is not None:
        met["max_latency_ms"] = final.latency_ms <= c.max_latency_ms
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
