"""What the driver needs of a tf_keras model: parameters and MACs counted from layer shapes.

The counting reads only layer attributes, so stand-in layer objects test the formulas
here; the real tf_keras model is counted where tf_keras is installed.
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from kerascompress.models.tf_keras import count_tf_keras


def _layer(kind: str, inp: tuple, out: tuple, calls: int = 1, **kernels: tuple):
    """A stand-in tf_keras layer of class ``kind`` with the given shapes and kernel shapes."""
    cls = type(kind, (), {})
    layer = cls()
    layer.input_shape, layer.output_shape = inp, out
    layer._inbound_nodes = [None] * calls
    for name, shape in kernels.items():
        setattr(layer, name, SimpleNamespace(shape=shape))
    layer.weights = [np.zeros(s) for s in kernels.values()]
    return layer


def _model(layers, params=123):
    return SimpleNamespace(layers=layers, count_params=lambda: params)


def test_macs_per_layer_kind_from_shapes():
    layers = [
        _layer("InputLayer", (None, 8, 8, 3), (None, 8, 8, 3)),
        _layer("Conv2D", (None, 8, 8, 3), (None, 8, 8, 16), kernel=(3, 3, 3, 16)),  # 64 positions * 16 * 27
        _layer("DepthwiseConv2D", (None, 8, 8, 16), (None, 8, 8, 16), depthwise_kernel=(3, 3, 16, 1)),  # 1024 * 9
        _layer("SeparableConv2D", (None, 8, 8, 16), (None, 4, 4, 8),
               depthwise_kernel=(3, 3, 16, 1), pointwise_kernel=(1, 1, 16, 8)),  # 16 * 144 + 16 * 128
        _layer("Conv2DTranspose", (None, 4, 4, 8), (None, 8, 8, 4), kernel=(3, 3, 4, 8)),  # 128 inputs * 36
        _layer("Flatten", (None, 8, 8, 4), (None, 256)),
        _layer("Dense", (None, 256), (None, 10), kernel=(256, 10)),
    ]
    params, macs = count_tf_keras(_model(layers, params=4242))
    assert params == 4242
    assert macs == 64 * 16 * 27 + 1024 * 9 + (16 * 144 + 16 * 128) + 128 * 36 + 2560


def test_unmodelled_or_shared_weighted_layers_make_macs_unknown():
    conv = _layer("Conv2D", (None, 8, 8, 3), (None, 8, 8, 4), kernel=(3, 3, 3, 4))
    custom = _layer("MyAttention", (None, 8, 4), (None, 8, 4), kernel=(4, 4))
    shared = _layer("Dense", (None, 4), (None, 4), calls=2, kernel=(4, 4))
    assert count_tf_keras(_model([conv, custom])) == (123, None)
    assert count_tf_keras(_model([conv, shared])) == (123, None)
    assert count_tf_keras(_model([conv])) == (123, 64 * 4 * 27)


def test_count_of_a_real_tf_keras_model(legacy_cnn):
    params, macs = count_tf_keras(legacy_cnn)
    assert params == legacy_cnn.count_params()
    # conv1 8*8*16*9 + conv2 8*8*32*9*16 + fc1 512*64 + predictions 64*10
    assert macs == 8 * 8 * 16 * 9 + 8 * 8 * 32 * 9 * 16 + 512 * 64 + 64 * 10
