"""Fake quantization: where quantizers sit (as the converter places them) and how they are calibrated."""
import pytest
from keras import layers

from kerascompress.quant import fake_quant as fq


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


def test_fake_quant_sits_where_the_converter_quantizes(bn_cnn):
    q = fq.fake_quant_model(bn_cnn)
    names = [l.name for l in q.model.layers]
    assert not any(isinstance(l, layers.BatchNormalization) for l in q.model.layers)  # folded
    assert isinstance(q.model.get_layer("conv1"), fq.QuantConv2D)
    assert q.model.get_layer("conv1").activation.__name__ == "relu"  # ReLU fused into the conv
    assert isinstance(q.model.get_layer("fc1"), fq.QuantDense)
    # conv2+bn2 has no activation (the ReLU follows the Add): its folded output, the Add's
    # output after the fused ReLU, the input and the logits are quantized - nothing else.
    assert set(q.activation_quantizers.values()) == {"image:input", "relu1", "bn2", "relu2", "fc1", "predictions"}
    assert names.index("predictions_fq") < names.index("predictions_softmax")
