"""Every shipped profile through `optimize()` with the default recipe: report and artifacts written,
and the report says what was built for the target or why not and how to build it.

A tiny model and tiny data keep each run to seconds. The host is injected as an AVX2-only
x86-64 machine without GPU tools, so the expectations do not depend on this machine's CPU
(LiteRT still runs on whatever CPU this is; only *whether* latency is measured follows
the injected host).
"""
from __future__ import annotations

import json

import keras
import numpy as np
import pytest

import kerascompress as kc
from kerascompress.export.tensorrt import kit_version
from kerascompress.targets import Target, list_profiles, load

AVX2_HOST = "processor\t: 0\nmodel name\t: Test AVX2 CPU\nflags\t\t: fpu sse4_1 avx fma f16c avx2\n"
STATUSES = {"applied", "skipped", "rolled back", "failed"}


@pytest.fixture
def avx2_host(monkeypatch, tmp_path):
    import sys

    from kerascompress.targets import cpuinfo

    monkeypatch.setattr(cpuinfo, "read_cpuinfo_text", lambda: AVX2_HOST)
    monkeypatch.setattr(cpuinfo, "host_machine", lambda: "x86_64")
    empty = tmp_path / "no-gpu-tools"
    empty.mkdir()
    monkeypatch.setenv("PATH", f"{empty}")  # no nvidia-smi, no edgetpu_compiler
    monkeypatch.setitem(sys.modules, "pynvml", None)


@pytest.fixture(scope="module")
def tiny():
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inp)
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    model = keras.Model(inp, keras.layers.Dense(4, activation="softmax")(h))
    rng = np.random.default_rng(0)
    x = rng.random((160, 8, 8, 1), dtype=np.float32)
    y = (x[:, :4, :4, 0].mean(axis=(1, 2)) * 4).astype(np.int64).clip(0, 3)
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=2, verbose=0)
    return model, (x, y)


def _run(model, data, target, out):
    return kc.optimize(model, target=target, data=data, output_dir=out, verbose=False, latency_runs=3,
                       eval_samples=64)


@pytest.mark.parametrize("name", list_profiles())
def test_every_profile_runs_end_to_end_and_says_what_was_built(name, tiny, avx2_host, tmp_path):
    model, data = tiny
    target = load(name)
    result = _run(model, data, name, tmp_path)
    report = result.report

    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["target"]["name"] == name and (tmp_path / "report.md").read_text().startswith("# kerascompress report")
    assert [s["name"] for s in saved["steps"]] == [s.name for s in report.steps] and len(report.steps) == 6
    assert {s.status for s in report.steps} <= STATUSES and report.final is not None
    assert (tmp_path / "model.keras").is_file()
    for kind, path in result.artifacts.items():
        assert path is None or path.is_file(), kind
    notes = "\n".join(report.notes)

    if target.runtime == "tensorrt":
        version = kit_version(target)
        assert version == {"nvidia-pascal-sm61": "8.6.1", "nvidia-jetson-orin-sm87": "10.16.0"}.get(name, "11.5.0")
        config = json.loads((tmp_path / "build_config.json").read_text())
        assert config["tensorrt_version"] == version and config["strongly_typed"] is (version != "8.6.1")
        assert result.artifacts["onnx"].is_file() and result.artifacts["tensorrt_engine"] is None
        assert (tmp_path / "build_engine.py").is_file() and (tmp_path / "trtexec.sh").is_file()
        assert "TensorRT: engine not built here: tensorrt is not installed" in notes
        command = next(n for n in report.notes if n.startswith("build it on the device with: trtexec"))
        assert ("--stronglyTyped" in command) is (version != "8.6.1")
        if report.final.precision.startswith("int8"):
            assert ("--int8" in command) is (version == "8.6.1")
    else:
        tflite = result.artifacts["tflite"]
        assert tflite.read_bytes()[4:8] == b"TFL3"
        why = target.why_not_here()
        if why is None:  # x86-avx2 on the injected AVX2 host
            assert name == "x86-avx2" and report.final.latency_ms is not None
        else:
            assert report.final.latency_ms is None and f"latency not measured here: {why}" in notes
    if name == "x86-avx512-vnni":
        assert "this host lacks avx512_vnni, avx512f" in notes
    if name == "cortex-m7":
        assert report.constraints_met["fits_flash"] and report.constraints_met["fits_ram"]
        assert "cortex-m7 memory: the final model fits" in notes and "xxd -i model.tflite" in notes
    if name == "edgetpu":
        assert "edgetpu op table" in notes and "edgetpu_compiler model.tflite" in notes
    if target.full_integer_only and report.final.precision != "float32":
        assert report.final.precision.endswith("int8 I/O")


def test_a_tensorrt_target_no_release_supports_still_gets_its_report(tiny, avx2_host, tmp_path):
    """The end of a run never raises: a TensorRT step that cannot even write a kit becomes a note."""
    model, data = tiny
    maxwell = Target(
        name="maxwell-sm52", runtime="tensorrt", device="gpu", compute_capability=5.2, runtime_version="",
        precisions={"fp32": kc.targets.Kernel.FAST, "fp16": kc.targets.Kernel.STORAGE},
    )
    result = kc.optimize(model, target=maxwell, data=data, recipe=[], output_dir=tmp_path, verbose=False)
    assert json.loads((tmp_path / "report.json").read_text())["target"]["name"] == "maxwell-sm52"
    (note,) = [n for n in result.report.notes if n.startswith("TensorRT: no engine and no build kit written")]
    assert "UnsupportedOnTarget" in note and "supports GPUs of compute capability 7.5+" in note
    assert result.artifacts["onnx"].is_file() and result.artifacts["tensorrt_engine"] is None
