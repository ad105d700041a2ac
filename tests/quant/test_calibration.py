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


@pytest.fixture(scope="module")
def heavy_tailed():
    """A small dense model and heavy-tailed inputs (Student t, 2 degrees of freedom)."""
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((16,), name="x")
    h = keras.layers.Dense(16, activation="relu", name="fc1")(inp)
    model = keras.Model(inp, keras.layers.Dense(4, name="out")(h))
    x = np.random.default_rng(0).standard_t(2, (512, 16)).astype(np.float32)
    return model, x


def test_fake_quant_calibration_methods_change_ranges(heavy_tailed):
    from kerascompress.quant import fake_quant as fq

    model, x = heavy_tailed
    ranges = {}
    for method in ("minmax", "percentile", "mse"):
        ranges[method] = fq.calibrate(fq.fake_quant_model(model), x, method)
    assert ranges["minmax"]["x_fq"] == pytest.approx((float(x.min()), float(x.max())))
    for method in ("percentile", "mse"):
        lo, hi = ranges[method]["x_fq"]
        assert hi < ranges["minmax"]["x_fq"][1] and lo > ranges["minmax"]["x_fq"][0]


def _input_scale(data):
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=data)
    quant = [t for t in interp.get_tensor_details() if t["name"] == "tfl.quantize"]
    return float(quant[0]["quantization_parameters"]["scales"][0])


def test_tflite_export_uses_the_calibration_method_and_sample_count(heavy_tailed):
    from kerascompress.export.tflite import to_tflite
    from kerascompress.quant.plan import PrecisionPlan

    model, x = heavy_tailed
    scales = {m: _input_scale(to_tflite(model, PrecisionPlan("int8", calibration=m), representative_data=x,
                                           num_samples=len(x)))
              for m in ("minmax", "percentile", "mse")}
    assert scales["minmax"] == pytest.approx((float(x.max()) - float(x.min())) / 255, rel=1e-3)
    assert scales["percentile"] < 0.9 * scales["minmax"]
    assert scales["mse"] < 0.99 * scales["minmax"]  # clips the rarest values only
    # the sample count is honoured: 8 samples see a narrower range than 512
    few = _input_scale(to_tflite(model, PrecisionPlan("int8"), representative_data=x, num_samples=8))
    assert few == pytest.approx((float(x[:8].max()) - float(x[:8].min())) / 255, rel=1e-3)
