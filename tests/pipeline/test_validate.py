"""Fidelity numbers on hand-made arrays, and `validate` dispatch, sizes and errors."""
from __future__ import annotations

import gzip

import numpy as np
import pytest

from kerascompress.errors import ConfigError, DataError, ExportError
from kerascompress.export.tflite import to_tflite
from kerascompress.metrics.fidelity import compare_outputs
from kerascompress.pipeline.validate import ValidationResult, validate


def test_fidelity_on_hand_made_arrays():
    ref = np.array([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.3, 0.3, 0.4], [0.5, 0.4, 0.1]], dtype="f4")
    cand = np.array([[0.8, 0.2, 0.0], [0.2, 0.7, 0.1], [0.3, 0.5, 0.2], [0.5, 0.4, 0.1]], dtype="f4")
    y = np.array([0, 1, 2, 1])
    f = compare_outputs(ref, cand, labels=y)
    assert f.n == 4
    assert f.max_abs_error == pytest.approx(0.2, abs=1e-6)
    assert f.mean_abs_error == pytest.approx((0.1 + 0.1 + 0.2 + 0.2) / 12, abs=1e-6)
    assert f.top1_agreement == 0.75  # sample 2 flips from class 2 to 1
    assert f.reference_accuracy == 0.75  # ref right on 0, 1, 2
    assert f.accuracy == 0.5  # candidate right on 0, 1
    assert f.accuracy_drop == pytest.approx(0.25)
    onehot = np.eye(3)[y]
    assert compare_outputs(ref, cand, labels=onehot).accuracy == 0.5
    no_labels = compare_outputs(ref, cand)
    assert no_labels.accuracy is None and no_labels.reference_accuracy is None


def test_fidelity_binary_and_multi_output_worst_case():
    ref1 = np.array([[0.9], [0.2], [0.6]], dtype="f4")
    cand1 = np.array([[0.8], [0.4], [0.4]], dtype="f4")
    ref2 = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]], dtype="f4")
    cand2 = ref2 + 0.01
    f = compare_outputs([ref1, ref2], [cand1, cand2], labels=[np.array([1, 0, 1]), np.array([0, 1, 0])])
    first, second = f.per_output
    assert first.top1_agreement == pytest.approx(2 / 3) and first.accuracy == pytest.approx(2 / 3)
    assert second.top1_agreement == 1.0 and second.max_abs_error == pytest.approx(0.01, abs=1e-6)
    assert f.top1_agreement == pytest.approx(2 / 3)
    assert f.max_abs_error == pytest.approx(0.2, abs=1e-6)
    assert f.accuracy == pytest.approx(2 / 3) and f.reference_accuracy == 1.0


def test_fidelity_shape_mismatch_is_a_data_error():
    with pytest.raises(DataError, match="shape"):
        compare_outputs(np.zeros((3, 2)), np.zeros((3, 4)))
    with pytest.raises(DataError, match="labels"):
        compare_outputs(np.zeros((3, 2)), np.zeros((3, 2)), labels=np.zeros(4))


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
