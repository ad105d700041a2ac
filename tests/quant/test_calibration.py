"""Calibration methods: each changes activation ranges the way it should; per-channel weights."""
import numpy as np
import pytest

from kerascompress.errors import ConfigError
from kerascompress.quant.calibration import (
    DEFAULT_CALIBRATION_SAMPLES,
    RangeCollector,
    activation_range,
    quantize_dequantize,
    quantize_weights,
)


@pytest.fixture
def outlier_values():
    rng = np.random.default_rng(0)
    return rng.standard_t(2, 100_000).astype(np.float32)  # heavy tails: rare huge activations


def test_minmax_covers_everything_percentile_and_mse_clip_outliers(outlier_values):
    lo, hi = activation_range(outlier_values, "minmax")
    assert (lo, hi) == (outlier_values.min(), outlier_values.max())
    p_lo, p_hi = activation_range(outlier_values, "percentile", percentile=99.9)
    assert p_hi < 0.2 * hi and p_lo > 0.2 * lo  # the 0.1% tails are dropped
    assert np.mean((outlier_values > p_lo) & (outlier_values < p_hi)) == pytest.approx(0.998, abs=1e-3)
    m_lo, m_hi = activation_range(outlier_values, "mse")
    assert m_hi < hi and m_lo > lo  # clipped ...

    def mse(r):
        return float(np.mean((quantize_dequantize(outlier_values, *r) - outlier_values) ** 2))

    # ... to the range with the least rounding-plus-clipping error of the three
    assert mse((m_lo, m_hi)) < 0.95 * mse((lo, hi))
    assert mse((m_lo, m_hi)) < mse((p_lo, p_hi))


def test_ranges_always_contain_zero():
    v = np.linspace(2.0, 5.0, 1000)
    for method in ("minmax", "percentile", "mse"):
        lo, hi = activation_range(v, method)
        assert lo == 0.0 and hi > 2.0


def test_collector_matches_one_shot_range(outlier_values):
    c = RangeCollector("minmax")
    for batch in np.array_split(outlier_values, 7):
        c.update(batch)
    assert c.range() == activation_range(outlier_values, "minmax")
    c = RangeCollector("percentile", percentile=99.9)
    for batch in np.array_split(outlier_values, 7):
        c.update(batch)
    assert c.range()[1] == pytest.approx(activation_range(outlier_values, "percentile", 99.9)[1], rel=0.05)


def test_per_channel_weights_keep_small_channels_precise():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((3, 3, 8, 4)).astype(np.float32) * 0.01
    w[..., 0] *= 1000  # one channel with large weights
    per_channel = np.abs(quantize_weights(w, per_channel=True) - w)[..., 1:].max()
    per_tensor = np.abs(quantize_weights(w, per_channel=False) - w)[..., 1:].max()
    assert per_channel < 0.002 * np.abs(w[..., 1:]).max() * 10
    assert per_tensor > 50 * per_channel
    q = quantize_weights(w, per_channel=True)
    steps = q[..., 2] / (np.abs(w[..., 2]).max() / 127)
    assert np.allclose(steps, np.round(steps), atol=1e-3)  # symmetric grid, zero point 0


def test_unknown_method_is_a_config_error():
    with pytest.raises(ConfigError, match="entropy"):
        activation_range(np.ones(3), "entropy")


def test_default_sample_count_is_sane():
    assert 100 <= DEFAULT_CALIBRATION_SAMPLES <= 1000
