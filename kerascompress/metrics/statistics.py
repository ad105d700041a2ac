"""How sure a verdict is: standard errors of accuracies and of paired accuracy differences.

Two models judged on the same samples are compared *paired*: only the samples on
which exactly one of them is right carry information about their difference, so the
difference is much more precise than two separate accuracies would suggest. With
``n01`` samples only the candidate gets right and ``n10`` only the reference gets
right, the drop (reference minus candidate) is ``(n10 - n01) / n`` with variance
``((n10 + n01) / n - drop**2) / n`` (the variance of the mean of per-sample
differences in {-1, 0, 1}; McNemar's test uses the same discordant counts).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Optional

import numpy as np

#: z of a two-sided 95% interval.
Z95 = 1.959964


@dataclasses.dataclass(frozen=True)
class PairedDifference:
    """Reference-minus-candidate accuracy on the same ``n`` samples, with its standard error."""

    drop: float  # positive: the candidate is worse
    standard_error: float
    n: int
    only_reference_right: int
    only_candidate_right: int

    @property
    def interval(self) -> tuple[float, float]:
        """95% interval of the drop."""
        half = Z95 * self.standard_error
        return self.drop - half, self.drop + half

    def within_noise_of(self, budget: float) -> bool:
        """True when the budget lies inside the 95% interval: the verdict could go either way."""
        lo, hi = self.interval
        return lo <= budget <= hi

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["interval_95"] = list(self.interval)
        return d


def accuracy_standard_error(accuracy: float, n: int) -> float:
    """Binomial standard error of an accuracy measured on ``n`` samples."""
    if n <= 0:
        return float("nan")
    return math.sqrt(max(accuracy * (1.0 - accuracy), 0.0) / n)


def paired_difference(reference_correct: Any, candidate_correct: Any) -> PairedDifference:
    """Paired accuracy drop from per-sample scores of two models on the same samples.

    Scores are correctness (booleans), or per-sample accuracies in [0, 1] for outputs
    with several positions (per-pixel classes); the drop is the mean per-sample
    difference and its standard error that of a mean, which for booleans is the
    discordant-pair formula of the module docstring.
    """
    r = np.asarray(reference_correct, dtype=np.float64).reshape(-1)
    c = np.asarray(candidate_correct, dtype=np.float64).reshape(-1)
    if r.shape != c.shape:
        raise ValueError(f"paired samples differ in number: {r.size} and {c.size}")
    n = int(r.size)
    if n == 0:
        return PairedDifference(float("nan"), float("nan"), 0, 0, 0)
    d = r - c
    drop = float(d.mean())
    variance = max(float(np.mean(d * d)) - drop * drop, 0.0) / n
    return PairedDifference(drop, math.sqrt(variance), n, int(np.sum(d > 0)), int(np.sum(d < 0)))


def describe_drop(diff: Optional[PairedDifference], budget: float) -> str:
    """One line for a report: the drop in points with its 95% interval, and whether the budget is within noise."""
    if diff is None or diff.n == 0 or math.isnan(diff.drop):
        return ""
    lo, hi = diff.interval
    text = f"drop {diff.drop * 100:+.2f} points (95% interval {lo * 100:+.2f} to {hi * 100:+.2f}, n={diff.n})"
    if diff.within_noise_of(budget):
        text += f"; the {budget * 100:.2f}-point budget is within noise of this measurement"
    return text
