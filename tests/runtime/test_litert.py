"""LiteRT runner: float I/O over quantized models, input/output order, batching, latency."""
from __future__ import annotations

import numpy as np
import pytest

from kerascompress.errors import DataError, ExportError
from kerascompress.export.tflite import to_tflite
from kerascompress.runtime.litert import LiteRTModel
from kerascompress.runtime.stats import LatencyStats


def test_two_inputs_two_outputs_in_keras_order(two_io):
    model, x = two_io
    ref = model.predict(x, verbose=0)
    runner = LiteRTModel(to_tflite(model, "float32"))
    assert runner.input_names == ["zeta", "alpha"]
    got = runner.predict(x)
    assert [g.shape for g in got] == [(40, 2), (40, 4)]
    for g, r in zip(got, ref):
        assert np.max(np.abs(g - r)) < 1e-5
    # a dict by input name works too
    got2 = runner.predict({"alpha": x[1], "zeta": x[0]})
    assert np.max(np.abs(got2[1] - ref[1])) < 1e-5


def test_signature_ordered_outputs_from_keras_converter(two_io):
    """Files from TFLiteConverter.from_keras_model list outputs out of order; the signature fixes it."""
    import tensorflow as tf

    model, x = two_io
    data = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    got = LiteRTModel(data).predict(x)
    ref = model.predict(x, verbose=0)
    assert [g.shape for g in got] == [(40, 2), (40, 4)]
    assert np.max(np.abs(got[0] - ref[0])) < 1e-5


def test_batching_is_invisible(two_io):
    model, x = two_io
    runner = LiteRTModel(to_tflite(model, "float32"))
    full = runner.predict(x, batch_size=40)
    odd = runner.predict(x, batch_size=7)  # last batch of 5
    ones = runner.predict(x, batch_size=1)
    for a, b, c in zip(full, odd, ones):
        assert np.max(np.abs(a - b)) < 1e-6 and np.max(np.abs(a - c)) < 1e-6


def test_quantized_io_is_float_for_callers(two_io):
    model, x = two_io
    data = to_tflite(model, "int8", representative_data=x, int8_io=True)
    runner = LiteRTModel(data)
    assert all(d["dtype"] == np.int8 for d in runner.input_details + runner.output_details)
    got = runner.predict(x)
    ref = model.predict(x, verbose=0)
    for g, r in zip(got, ref):
        assert g.dtype == np.float32
        assert np.max(np.abs(g - r)) < 0.1 * np.max(np.abs(r))


def test_wrong_shapes_and_counts_are_data_errors(two_io):
    model, x = two_io
    runner = LiteRTModel(to_tflite(model, "float32"))
    with pytest.raises(DataError, match="2 inputs"):
        runner.predict(x[0])
    with pytest.raises(DataError, match="shape"):
        runner.predict([x[1], x[0]])


def test_corrupt_file_is_an_export_error(tmp_path):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(ExportError, match="cannot be loaded"):
        LiteRTModel(bad)
    with pytest.raises(ExportError, match="does not exist"):
        LiteRTModel(tmp_path / "missing.tflite")


def test_latency_at_batch_one(two_io):
    model, _ = two_io
    stats = LiteRTModel(to_tflite(model, "float32"), num_threads=1).latency(runs=5, warmup=1)
    assert isinstance(stats, LatencyStats) and stats.runs == 5 and stats.threads == 1
    assert 0 < stats.median_ms <= stats.p90_ms
