"""Which runtime reads which artifact: one decision, by content for bytes and by suffix for files."""
from __future__ import annotations

import importlib.util

import keras
import pytest

from kerascompress.errors import ConfigError, ExportError
from kerascompress.export.onnx import to_onnx
from kerascompress.export.tflite import to_tflite
from kerascompress.runtime.formats import SUFFIXES, artifact_format, open_artifact
from kerascompress.runtime.litert import LiteRTModel
from kerascompress.runtime.onnx_runner import OnnxModel


@pytest.fixture(scope="module")
def tiny():
    inp = keras.Input((4,))
    return keras.Model(inp, keras.layers.Dense(2)(inp))


def test_bytes_are_tflite_only_when_they_say_so(tiny):
    assert artifact_format(to_tflite(tiny)) == "tflite"
    assert artifact_format(bytearray(to_tflite(tiny))) == "tflite"
    with pytest.raises(ExportError, match="TFL3"):
        artifact_format(to_onnx(tiny).model_bytes)  # ONNX bytes are not guessed: give a path


def test_files_go_by_suffix_and_must_exist(tmp_path):
    for suffix, fmt in SUFFIXES.items():
        path = tmp_path / f"model{suffix.upper()}"
        path.write_bytes(b"x")
        assert artifact_format(path) == fmt and artifact_format(str(path)) == fmt
    with pytest.raises(ExportError, match="does not exist"):
        artifact_format(tmp_path / "missing.onnx")
    (tmp_path / "model.pb").write_bytes(b"x")
    with pytest.raises(ConfigError, match="suffix '.pb'"):
        artifact_format(tmp_path / "model.pb")
    with pytest.raises(ConfigError, match="got int"):
        artifact_format(42)


def test_each_format_opens_with_its_runtime(tiny, tmp_path):
    runner = open_artifact(to_tflite(tiny), num_threads=2)
    assert isinstance(runner, LiteRTModel) and runner.num_threads == 2
    to_onnx(tiny, path=tmp_path / "m.onnx")
    assert isinstance(open_artifact(tmp_path / "m.onnx"), OnnxModel)


def test_an_engine_opens_with_tensorrt_or_says_what_to_do_instead(tmp_path):
    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("tensorrt is installed here")
    (tmp_path / "m.engine").write_bytes(b"\x00" * 16)
    with pytest.raises(ExportError, match="validate the ONNX it is built from"):
        open_artifact(tmp_path / "m.engine")
