"""Per-layer sensitivity: keyed exactly by Keras layer name, finds a deliberately sensitive layer."""
import keras
import numpy as np
import pytest
from keras import layers

from kerascompress.quant import fake_quant as fq
from kerascompress.quant.sensitivity import layer_sensitivity


def test_results_are_keyed_by_the_quantizable_keras_layers(digits_cnn, digits_data):
    sens = layer_sensitivity(digits_cnn, digits_data[0][:128])
    assert sorted(s.layer for s in sens) == ["conv1", "conv2", "fc1", "predictions"]
    assert all(s.error >= 0 and 0 <= s.disagreement <= 1 for s in sens)
    assert {s.layer: s.params for s in sens}["fc1"] == digits_cnn.get_layer("fc1").count_params()


def test_the_rebuilt_model_keeps_layer_names_and_folds_batchnorm():
    inp = keras.Input((8, 8, 1), name="image")
    h = layers.Conv2D(4, 3, use_bias=False, name="c")(inp)
    h = layers.BatchNormalization(name="bn")(h)
    h = layers.ReLU(name="act")(h)
    h = layers.Flatten(name="flat")(h)
    model = keras.Model(inp, layers.Dense(3, activation="softmax", name="head")(h))
    assert fq.quantizable_layers(model) == ["c", "head"]  # BatchNormalization is folded, not a layer of its own
    whole = fq.fake_quant_model(model)
    names = [l.name for l in whole.model.layers]
    assert "bn" not in names and "act" not in names
    assert isinstance(whole.model.get_layer("c"), fq.QuantConv2D)
    # activations are quantized after the fused ReLU, before the softmax, never after flatten
    assert whole.activation_quantizers == {"image_fq": "image:input", "act_fq": "act", "head_fq": "head"}
    alone = fq.fake_quant_model(model, ["head"])
    assert alone.activation_quantizers == {"head_input_fq": "head:input", "head_fq": "head"}
    assert isinstance(alone.model.get_layer("c"), layers.Conv2D) and not isinstance(
        alone.model.get_layer("c"), fq.QuantConv2D)
    x = np.random.default_rng(0).random((16, 8, 8, 1)).astype("f4")
    fq.calibrate(whole, x)
    assert np.allclose(fq.predict(whole.model, x), model.predict(x, verbose=0), atol=0.05)


@pytest.mark.parametrize("producer,consumer,expected", [("conv1", "conv2", {"conv1", "conv2"}),
                                                          ("fc1", "predictions", {"fc1", "predictions"})])
def test_ranking_finds_the_deliberately_sensitive_layer(digits_cnn, digits_data, producer, consumer, expected):
    x = digits_data[0][:256]
    sensitive = fq.unbalance_channel(digits_cnn, producer, consumer, channel=_busiest(digits_cnn, producer, x),
                                     factor=300.0)
    np.testing.assert_allclose(sensitive.predict(x, verbose=0), digits_cnn.predict(x, verbose=0), atol=1e-4)
    sens = layer_sensitivity(sensitive, x)
    top2 = {s.layer for s in sens[:2]}
    assert top2 == expected
    baseline = {s.layer: s.error for s in layer_sensitivity(digits_cnn, x)}
    for s in sens[:2]:
        assert s.error > 10 * baseline[s.layer]  # the outlier channel, not the layer's nature, makes it sensitive


def _busiest(model, layer, x):
    """The output channel of ``layer`` with the largest mean activation (a live channel)."""
    out = keras.Model(model.inputs, model.get_layer(layer).output).predict(x, verbose=0)
    return int(np.argmax(out.reshape(-1, out.shape[-1]).mean(0)))
