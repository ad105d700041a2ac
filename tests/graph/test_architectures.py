"""Architectures users hit: each prunes where it can, freezes with a stated reason where it cannot, exports exactly.

Per class (segmentation net, attention block, integer-input text model, multi-input /
multi-output model): the dead-channel oracle says the surgery is exact; `ChannelPruning`
at half its channels shrinks the model and names why the rest is frozen; the pruned
model's TFLite and ONNX exports compute what Keras computes.
"""
from __future__ import annotations

from typing import Any, Callable

import keras
import numpy as np
import pytest
from keras import layers as L

from kerascompress import targets
from kerascompress.data.samples import as_list
from kerascompress.export.onnx import to_onnx
from kerascompress.export.tflite import to_tflite
from kerascompress.passes.base import ModelState
from kerascompress.passes.pruning import ChannelPruning
from kerascompress.pipeline.measure import pass_context
from kerascompress.runtime.litert import LiteRTModel
from kerascompress.runtime.onnx_runner import OnnxModel

from .test_exact_surgery import check_dead_channels_pruned_exactly, randomize

#: float32 exports run other kernels (XNNPACK, onnxruntime) in another summation order: 1e-4 of the scale.
EXPORT_RTOL = 1e-4


def segmentation_net() -> keras.Model:
    """A small U-Net: encoder, Conv2DTranspose and UpSampling2D decoders, concatenated skips, per-pixel softmax."""
    x = keras.Input((16, 16, 3))
    e1 = L.ReLU()(L.BatchNormalization()(L.Conv2D(12, 3, padding="same")(x)))
    e2 = L.Conv2D(16, 3, padding="same", activation="relu")(L.MaxPooling2D()(e1))
    bottom = L.Conv2D(24, 3, padding="same", activation="relu")(L.MaxPooling2D()(e2))
    u2 = L.Conv2DTranspose(16, 2, strides=2, padding="same")(bottom)
    d2 = L.Conv2D(16, 3, padding="same", activation="relu")(L.Concatenate()([u2, e2]))
    u1 = L.Conv2D(12, 1)(L.UpSampling2D()(d2))
    d1 = L.Conv2D(12, 3, padding="same", activation="relu")(L.Concatenate()([u1, e1]))
    return keras.Model(x, L.Conv2D(4, 1, activation="softmax", name="mask")(d1), name="unet")


def attention_block() -> keras.Model:
    """A transformer encoder block: MultiHeadAttention and a feed-forward net, residuals, LayerNormalization."""
    x = keras.Input((10, 16))
    h = L.Dense(32)(x)
    a = L.MultiHeadAttention(num_heads=4, key_dim=8)(h, h)
    h = L.LayerNormalization()(L.Add()([h, a]))
    f = L.Dense(32)(L.Dense(64, activation="gelu", name="ffn_in")(h))
    h = L.LayerNormalization()(L.Add()([h, f]))
    return keras.Model(x, L.Dense(3, activation="softmax")(L.GlobalAveragePooling1D()(h)), name="encoder")


def text_model() -> keras.Model:
    """Integer token ids through an Embedding, Conv1D and pooling."""
    x = keras.Input((20,), dtype="int32")
    h = L.Embedding(100, 16, name="embed")(x)
    h = L.Conv1D(24, 3, padding="same", activation="relu")(h)
    h = L.Conv1D(24, 3, padding="same", activation="relu")(h)
    return keras.Model(x, L.Dense(2, activation="softmax")(L.GlobalMaxPooling1D()(h)), name="text_cnn")


def multi_io_model() -> keras.Model:
    """An image and a vector in; a class head and a regression head out."""
    image, vector = keras.Input((12, 12, 3), name="image"), keras.Input((6,), name="vector")
    a = L.GlobalAveragePooling2D()(L.Conv2D(16, 3, activation="relu")(L.Conv2D(8, 3, activation="relu")(image)))
    b = L.Dense(16, activation="relu")(vector)
    shared = L.Dense(32, activation="relu")(L.Concatenate()([a, b]))
    classes = L.Dense(5, activation="softmax", name="classes")(shared)
    value = L.Dense(1, name="value")(L.Dense(8, activation="relu")(shared))
    return keras.Model([image, vector], [classes, value], name="multi_io")


def _inputs(model: keras.Model, n: int = 8) -> Any:
    rng = np.random.default_rng(3)
    xs = [rng.integers(0, 100, (n,) + tuple(t.shape[1:])).astype("int32") if "int" in str(t.dtype)
          else rng.standard_normal((n,) + tuple(t.shape[1:])).astype("float32") for t in model.inputs]
    return xs if len(xs) > 1 else xs[0]


ARCHITECTURES: dict[str, tuple[Callable[[], keras.Model], tuple[str, ...]]] = {
    # name: (builder, words the frozen groups' reasons must contain)
    "segmentation": (segmentation_net, ("reaches model output mask",)),
    "attention": (attention_block, ("MultiHeadAttention", "LayerNormalization normalizes across the channel axis")),
    "text": (text_model, ("reaches model output",)),
    "multi_io": (multi_io_model, ("reaches model output classes", "reaches model output value", "model input")),
}


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_surgery_is_exact(name):
    build, _ = ARCHITECTURES[name]
    result = check_dead_channels_pruned_exactly(randomize(build(), seed=1), seed=1)
    assert result["dead"] >= 10


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_prunes_where_it_can_freezes_with_reasons_and_exports_exactly(name):
    build, reasons = ARCHITECTURES[name]
    model = randomize(build(), seed=2)
    ctx = pass_context(targets.load("x86-avx2"), progress=lambda message: None)
    output = ChannelPruning(ratio=0.5, min_channels=1, channel_multiple=1).apply(ModelState(model), ctx)
    pruned, details = output.state.model, output.details
    assert details["params_after"] < 0.85 * details["params_before"]
    assert any(g["removed"] > 0 for g in details["groups"])
    stated = " ".join(r for g in details["frozen_groups"] for r in g["reasons"])
    for words in reasons:
        assert words in stated, stated
    x = _inputs(pruned)
    reference = [np.asarray(o) for o in as_list(pruned.predict(x, verbose=0))]
    for runtime, outputs in (("tflite", LiteRTModel(to_tflite(pruned, "float32")).predict(x)),
                             ("onnx", OnnxModel(to_onnx(pruned).model_bytes).predict(x))):
        for ref, got in zip(reference, as_list(outputs)):
            scale = max(float(np.abs(ref).max()), 1e-6)
            assert np.abs(np.asarray(got) - ref).max() / scale < EXPORT_RTOL, (name, runtime)
