"""Small reference models several test modules build (ONNX, TensorRT, runner tests)."""
from __future__ import annotations

import keras
import numpy as np


def small_cnn() -> "keras.Model":
    keras.utils.set_random_seed(0)
    inp = keras.Input((16, 16, 3), name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", name="conv1")(inp)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.ReLU(name="relu1")(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    # "dense" and "dense_1" collide with TF's name-scope suffixes: the mapping must not.
    x = keras.layers.Conv2D(16, 1, name="dense")(x)
    x = keras.layers.Conv2D(16, 1, activation="relu", name="dense_1")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    y = keras.layers.Dense(4, name="fc")(x)
    return keras.Model(inp, y, name="net")


def two_in_two_out() -> "keras.Model":
    keras.utils.set_random_seed(1)
    a = keras.Input((8,), name="a_in")
    b = keras.Input((5,), name="b_in")
    h = keras.layers.Concatenate(name="cat")([keras.layers.Dense(6, name="da")(a), keras.layers.Dense(6, name="db")(b)])
    out1 = keras.layers.Dense(3, name="head_z")(h)
    out2 = keras.layers.Dense(2, name="head_a")(h)  # names deliberately not sorted
    return keras.Model([a, b], [out1, out2], name="two")


def mobilenet_v2() -> "keras.Model":
    """MobileNetV2 (random weights) with BN statistics set from data.

    With default BN statistics a random MobileNetV2's outputs shrink to ~1e-10 and every
    error looks like zero; re-estimated statistics give unit-scale activations.
    """
    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(
        weights=None, input_shape=(96, 96, 3), alpha=0.35, classifier_activation=None
    )
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    for bn in bns:
        bn.momentum = 0.0
    model(np.random.default_rng(2).uniform(-1, 1, (32, 96, 96, 3)).astype("float32"), training=True)
    return model
