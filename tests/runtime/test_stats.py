"""LatencyStats: the numbers every runner reports."""
from __future__ import annotations

import pytest

from kerascompress.errors import ConfigError
from kerascompress.runtime.stats import LatencyStats


def test_latency_stats_numbers():
    s = LatencyStats.from_times([1.0, 2.0, 3.0, 4.0, 10.0], threads=2)
    assert s.median_ms == 3.0 and s.mean_ms == 4.0 and s.runs == 5 and s.threads == 2
    assert s.p90_ms == pytest.approx(7.6)


def test_no_runs_is_a_config_error_and_one_run_is_its_own_statistics():
    with pytest.raises(ConfigError, match="runs >= 1"):
        LatencyStats.from_times([], threads=1)
    one = LatencyStats.from_times([2.5], threads=4)
    assert (one.median_ms, one.p90_ms, one.mean_ms, one.runs, one.threads) == (2.5, 2.5, 2.5, 1, 4)
