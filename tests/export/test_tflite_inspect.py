"""Reading weights back from a .tflite: distinct values, zeros and per-channel counts of what the file stores."""
from __future__ import annotations

import gzip

import keras
import numpy as np

from kerascompress.export.tflite import to_tflite
from kerascompress.export.tflite_inspect import kernel_summary, tflite_kernel_stats


def _known_weights() -> keras.Model:
    """A Conv2D with 3 values per output channel and a Dense that is half zeros."""
    inp = keras.Input((6, 6, 2))
    conv = keras.layers.Conv2D(4, 3, name="conv")
    dense = keras.layers.Dense(8, name="fc")
    model = keras.Model(inp, dense(keras.layers.Flatten()(conv(inp))))
    kernel = np.zeros((3, 3, 2, 4), np.float32)
    for c in range(4):
        kernel[..., c] = np.resize(np.array([0.5, -0.25, 1.0]) * (c + 1), (3, 3, 2))  # 3 values, different per channel
    conv.set_weights([kernel, np.zeros(4, np.float32)])
    fc = np.random.default_rng(0).standard_normal((64, 8)).astype(np.float32) + 3.0
    fc[::2] = 0.0
    dense.set_weights([fc, np.zeros(8, np.float32)])
    return model


def _by_op(rows):
    return {r["op"]: r for r in rows}


def test_float32_file_holds_the_keras_values():
    rows = _by_op(tflite_kernel_stats(to_tflite(_known_weights())))
    conv, fc = rows["CONV_2D"], rows["FULLY_CONNECTED"]
    assert conv["shape"] == [4, 3, 3, 2] and conv["dtype"] == "float32"  # TFLite stores output channels first
    assert conv["max_unique_per_channel"] == 3 and conv["unique_values"] == 10  # 1.0 and 2.0 occur in two channels
    assert fc["shape"] == [8, 64] and fc["zero_fraction"] == 0.5
    assert not conv["per_channel_quantized"]


def test_fp16_weights_are_followed_through_their_dequantize():
    rows = _by_op(tflite_kernel_stats(to_tflite(_known_weights(), "fp16")))
    assert rows["CONV_2D"]["dtype"] == "float16" and rows["CONV_2D"]["max_unique_per_channel"] == 3


def test_int8_weights_are_per_channel_quantized():
    model = _known_weights()
    rep = np.random.default_rng(1).uniform(0, 1, (32, 6, 6, 2)).astype(np.float32)
    rows = _by_op(tflite_kernel_stats(to_tflite(model, "int8", representative_data=rep)))
    assert rows["CONV_2D"]["dtype"] == "int8" and rows["CONV_2D"]["per_channel_quantized"]
    assert rows["CONV_2D"]["max_unique_per_channel"] == 3  # scaling per channel keeps three levels each
    assert rows["FULLY_CONNECTED"]["zero_fraction"] >= 0.5


def test_summary_weights_zeros_by_kernel_size_and_reports_gzip():
    data = to_tflite(_known_weights())
    s = kernel_summary(data)
    assert s["kernels"] == 2 and s["dtype"] == ["float32"]
    assert s["max_unique_values_per_channel"] == max(r["max_unique_per_channel"] for r in tflite_kernel_stats(data))
    assert s["zero_fraction"] == np.average([0.0, 0.5], weights=[72, 512])
    assert s["bytes"] == len(data) and s["gzip_bytes"] == len(gzip.compress(data, compresslevel=9))
    assert len(s["per_kernel"]) == 2
