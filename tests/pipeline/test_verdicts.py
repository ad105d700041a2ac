"""Keep or roll back: each rule of `verdict` on hand-made metrics, and the final constraints check."""
from __future__ import annotations

import pytest

from kerascompress.passes.base import Gate
from kerascompress.pipeline.report import Metrics
from kerascompress.pipeline.types import Constraints
from kerascompress.pipeline.verdicts import constraints_met, verdict


def _m(**fields) -> Metrics:
    base = {"params": 100, "macs": 1000, "precision": "float32", "size_bytes": 10_000, "gzip_bytes": 9_000}
    base.update(fields)
    return Metrics(**base)


BASELINE = _m(accuracy=0.90)
SIZE = Gate.allow("size")


def test_a_pass_within_every_budget_stays():
    assert verdict(BASELINE, _m(accuracy=0.895, size_bytes=5_000), BASELINE, 0.8, SIZE, Constraints()) is None


def test_accuracy_below_the_budget_is_rolled_back_with_the_numbers():
    why = verdict(BASELINE, _m(accuracy=0.88), BASELINE, None, SIZE, Constraints(max_accuracy_drop=0.01))
    assert why == ("accuracy 0.8800 is 2.00 points below the float32 baseline 0.9000; the budget is 1.00 points")
    assert verdict(BASELINE, _m(accuracy=0.88), BASELINE, None, SIZE, Constraints(max_accuracy_drop=0.03)) is None


def test_without_labels_top1_agreement_is_judged_instead():
    no_labels = _m()
    why = verdict(no_labels, _m(top1_agreement=0.95), no_labels, None, SIZE, Constraints(max_accuracy_drop=0.01))
    assert why is not None and "top-1 agreement with the original fell to 0.9500" in why
    assert verdict(no_labels, _m(top1_agreement=0.995), no_labels, None, SIZE, Constraints()) is None


def test_slower_than_the_tolerance_is_rolled_back():
    why = verdict(BASELINE, _m(accuracy=0.9), BASELINE, 1.25, SIZE, Constraints(max_slowdown=1.10))
    assert why == "1.25x the latency before it, i.e. slower (tolerance 1.10x)"
    assert verdict(BASELINE, _m(accuracy=0.9), BASELINE, 1.05, SIZE, Constraints(max_slowdown=1.10)) is None


@pytest.mark.parametrize("after_size,rolled_back", [(10_100, False), (10_101, True)])
def test_growth_beyond_one_percent_of_serialisation_noise_is_rolled_back(after_size, rolled_back):
    why = verdict(BASELINE, _m(accuracy=0.9, size_bytes=after_size), BASELINE, None, SIZE, Constraints())
    assert (why is not None) is rolled_back
    if rolled_back:
        assert why == "the artifact grew from 10,000 to 10,101 bytes"
    # a pass that does not claim size may grow the file
    assert verdict(BASELINE, _m(accuracy=0.9, size_bytes=after_size), BASELINE, None, Gate.allow("latency"),
                   Constraints()) is None


def test_a_compressed_size_pass_must_shrink_gzip():
    gate = Gate.allow("compressed-size")
    why = verdict(BASELINE, _m(accuracy=0.9, gzip_bytes=9_000), BASELINE, None, gate, Constraints())
    assert why == ("it was to buy compressed size only, but the gzip size went from 9,000 to 9,000 bytes")
    assert verdict(BASELINE, _m(accuracy=0.9, gzip_bytes=8_999), BASELINE, None, gate, Constraints()) is None


def test_constraints_met_reports_only_what_was_measured():
    final = _m(accuracy=0.885, size_bytes=4_000, latency_ms=2.0)
    c = Constraints(max_accuracy_drop=0.01, max_size_bytes=5_000, max_latency_ms=1.5)
    assert constraints_met(final, BASELINE, c) == {"max_accuracy_drop": False, "size": True, "latency": False}
    # relative budgets are fractions of the float32 baseline; the tightest of absolute and relative wins
    base = _m(accuracy=0.9, size_bytes=10_000, latency_ms=4.0)
    rel = Constraints(latency_ratio=0.5, size_ratio=0.3, max_size_bytes=5_000, max_macs=10)
    assert constraints_met(_m(accuracy=0.9, size_bytes=4_000, latency_ms=2.0, macs=10), base, rel) == {
        "max_accuracy_drop": True, "size": False, "latency": True, "max_macs": True}
    assert constraints_met(_m(), _m(), Constraints()) == {}  # no accuracy, no goals: nothing to claim
