"""Fidelity numbers on hand-made arrays, and `validate` dispatch, sizes and errors."""
from __future__ import annotations

import gzip

import pytest

from kerascompress.errors import ConfigError, DataError, ExportError
from kerascompress.export.tflite import to_tflite
from kerascompress.pipeline.validate import ValidationResult, validate


def test_validate_tflite_bytes_and_path(digits_cnn, digits_data, tmp_path):
    x, y = digits_data[2], digits_data[3]
    path = tmp_path / "m.tflite"
    data = to_tflite(digits_cnn, "int8", representative_data=digits_data[0], path=path)
    for artifact in (data, path, str(path)):
        r = validate(artifact, reference=digits_cnn, data=(x, y), runs=3, warmup=1)
        assert isinstance(r, ValidationResult) and r.format == "tflite"
        assert r.size_bytes == len(data)
        assert r.gzip_bytes == len(gzip.compress(data, compresslevel=9))
        assert r.fidelity.n == len(x)
        assert r.fidelity.top1_agreement > 0.95
        assert r.fidelity.accuracy_drop < 0.02
        assert r.latency.runs == 3 and r.latency.median_ms > 0
    assert set(r.as_dict()) == {"format", "size_bytes", "gzip_bytes", "fidelity", "latency"}


def test_validate_float32_without_labels_or_timing(digits_cnn, digits_data, tmp_path):
    src = tmp_path / "ref.keras"
    digits_cnn.save(src)
    r = validate(to_tflite(digits_cnn), reference=str(src), data=digits_data[2][:50], runs=0)
    assert r.latency is None and r.fidelity.accuracy is None
    assert r.fidelity.max_abs_error < 1e-5


def test_validate_errors(tmp_path, digits_cnn):
    with pytest.raises(ConfigError, match="suffix"):
        validate(tmp_path / "model.pb")
    with pytest.raises(ExportError, match="does not exist"):
        validate(tmp_path / "missing.tflite")
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"garbage" * 10)
    with pytest.raises(ExportError, match="cannot be loaded"):
        validate(bad)
    with pytest.raises(ExportError, match="TFL3"):
        validate(b"not a model at all")
    with pytest.raises(DataError, match="no `data`"):
        validate(to_tflite(digits_cnn), reference=digits_cnn, runs=0)


def test_validate_dispatches_onnx_lazily(tmp_path):
    """A corrupt .onnx goes to the ONNX runner (or a clear error when it is absent), never LiteRT."""
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"garbage")
    with pytest.raises(ExportError) as info:
        validate(bad, runs=0)
    assert "TFLite" not in str(info.value)


def test_validate_an_onnx_export_against_keras(digits_cnn, digits_data, tmp_path):
    from kerascompress.export.onnx import to_onnx
    from kerascompress.pipeline.validate import validate

    _, _, x_test, y_test = digits_data
    path = tmp_path / "m.onnx"
    to_onnx(digits_cnn, path=path)
    result = validate(path, reference=digits_cnn, data=(x_test, y_test), runs=5)
    assert result.format == "onnx"
    assert result.fidelity.max_abs_error < 1e-4
    assert result.fidelity.top1_agreement == 1.0
    assert result.latency.median_ms > 0


def test_validating_an_engine_without_tensorrt_says_what_to_do(tmp_path):
    import importlib.util

    import pytest

    from kerascompress.errors import ExportError
    from kerascompress.pipeline.validate import validate

    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("tensorrt is installed here: the refusal path does not apply")
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"\x00" * 64)
    with pytest.raises(ExportError, match="validate the ONNX it is built from"):
        validate(engine, runs=0)
