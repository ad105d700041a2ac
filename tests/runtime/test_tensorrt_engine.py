"""The TensorRT engine code, executed against fake `tensorrt`, cuda-python and torch modules.

The fakes (tests/runtime/fake_cuda.py) record every call: these tests check the build
calls per TensorRT version, that copies and executions share one stream and results are
read only after a wait, that every buffer and the stream are released (also when the
run fails), and that the numbers coming back are the ONNX model's.
"""
from __future__ import annotations

import ast
import gc
import inspect
import json
import runpy
import sys

import numpy as np
import onnxruntime as ort
import pytest

from kerascompress.export.onnx import to_onnx
from kerascompress.export.tensorrt import engine_script_source
from kerascompress.runtime import tensorrt_engine
from kerascompress.runtime.tensorrt_engine import (
    trt_build_engine,
    trt_run_engine,
    trt_time_batches,
)

from .fake_cuda import (
    ENGINE_MAGIC,
    FakeGpu,
    install_cudart,
    install_tensorrt,
    install_torch,
)


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory):
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((6,), name="features")
    h = keras.layers.Dense(8, activation="relu", name="hidden")(inp)
    model = keras.Model(inp, keras.layers.Dense(3, name="logits")(h))
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    to_onnx(model, path=path)
    return model, path


@pytest.fixture
def gpu():
    return FakeGpu()


SHAPES = {"features": [[1, 6], [4, 6], [8, 6]]}


def _reference(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def test_strongly_typed_build_on_tensorrt_10(onnx_model, gpu, monkeypatch, tmp_path):
    _, path = onnx_model
    trt = install_tensorrt(monkeypatch, gpu, "10.8.0")
    engine = tmp_path / "m.engine"
    trt_build_engine(str(path), str(engine), SHAPES, sparsity=True)
    assert trt.calls[0] == ("create_network", 1 << 1)  # STRONGLY_TYPED only
    assert ("set_memory_pool_limit", "WORKSPACE", 2048 << 20) in trt.calls
    assert ("set_shape", "features", (1, 6), (4, 6), (8, 6)) in trt.calls
    assert trt.calls[-1] == ("build_serialized_network", ("SPARSE_WEIGHTS",))
    assert engine.read_bytes() == ENGINE_MAGIC + path.read_bytes()


def test_weakly_typed_build_on_tensorrt_86_sets_explicit_batch_and_precision_flags(onnx_model, gpu, monkeypatch, tmp_path):
    _, path = onnx_model
    trt = install_tensorrt(monkeypatch, gpu, "8.6.1")
    trt_build_engine(str(path), str(tmp_path / "m.engine"), SHAPES, strongly_typed=False, builder_flags=("INT8", "FP16"))
    assert trt.calls[0] == ("create_network", 1 << 0)  # EXPLICIT_BATCH, no STRONGLY_TYPED
    assert [c for c in trt.calls if c[0] == "set_flag"] == [("set_flag", "INT8"), ("set_flag", "FP16")]
    assert trt.calls[-1] == ("build_serialized_network", ("INT8", "FP16"))


def test_a_kit_for_the_wrong_tensorrt_says_so(onnx_model, gpu, monkeypatch, tmp_path):
    _, path = onnx_model
    install_tensorrt(monkeypatch, gpu, "8.6.1")
    with pytest.raises(RuntimeError, match="TensorRT 8.6.1 has no strongly typed networks"):
        trt_build_engine(str(path), str(tmp_path / "a.engine"), SHAPES)
    install_tensorrt(monkeypatch, gpu, "11.2.1")
    with pytest.raises(RuntimeError, match=r"TensorRT 11.2.1 has no BuilderFlag.INT8"):
        trt_build_engine(str(path), str(tmp_path / "b.engine"), SHAPES, strongly_typed=False, builder_flags=("INT8",))


def _engine(path, gpu, monkeypatch, tmp_path, version="10.8.0", execute_ok=True):
    install_tensorrt(monkeypatch, gpu, version, execute_ok=execute_ok)
    engine = tmp_path / "m.engine"
    trt_build_engine(str(path), str(engine), SHAPES)
    return engine


def test_run_with_cuda_python_one_stream_waits_and_frees(onnx_model, gpu, monkeypatch, tmp_path):
    _, path = onnx_model
    engine = _engine(path, gpu, monkeypatch, tmp_path)
    install_cudart(monkeypatch, gpu)
    x = np.random.default_rng(0).standard_normal((4, 6)).astype(np.float32)
    outputs, times = trt_run_engine(str(engine), {"features": x}, runs=3, warmup=2)
    np.testing.assert_allclose(outputs["logits"], _reference(path, x), rtol=1e-6, atol=1e-6)
    assert len(times) == 3 and all(t >= 0 for t in times)

    (created,) = gpu.events("stream_create")
    stream = created[1]
    kinds = [e[0] for e in gpu.log]
    # every copy and execution on the one stream
    assert {e[2] for e in gpu.events("h2d") + gpu.events("d2h")} == {stream}
    assert {e[1] for e in gpu.events("exec")} == {stream} and len(gpu.events("exec")) == 5
    # the input is copied before the first execution; each execution is waited for
    assert kinds.index("h2d") < kinds.index("exec")
    for i, kind in enumerate(kinds):
        if kind == "exec":
            assert kinds[i + 1] == "sync"
    # the output is read after the last execution and waited for before it is returned
    last_exec, d2h = max(i for i, k in enumerate(kinds) if k == "exec"), kinds.index("d2h")
    assert last_exec < d2h and kinds[d2h + 1] == "sync"
    # input and output buffers: two allocations, two frees, then the stream is destroyed
    assert sorted(e[1] for e in gpu.events("malloc")) == sorted(e[1] for e in gpu.events("free"))
    assert len(gpu.events("malloc")) == 2 and gpu.memory == {}
    assert gpu.log[-1] == ("stream_destroy", stream)


def test_run_with_torch_copies_on_the_engine_stream_and_releases_tensors(onnx_model, gpu, monkeypatch, tmp_path):
    _, path = onnx_model
    engine = _engine(path, gpu, monkeypatch, tmp_path)
    install_torch(monkeypatch, gpu)
    x = np.random.default_rng(1).standard_normal((2, 6)).astype(np.float32)
    outputs, _ = trt_run_engine(str(engine), {"features": x}, runs=2, warmup=1)
    np.testing.assert_allclose(outputs["logits"], _reference(path, x), rtol=1e-6, atol=1e-6)
    (created,) = gpu.events("stream_create")
    assert {e[2] for e in gpu.events("h2d") + gpu.events("d2h")} == {created[1]}  # never the default stream 0
    gc.collect()
    assert gpu.memory == {} and len(gpu.events("free")) == len(gpu.events("malloc")) == 2


def test_a_failed_execution_raises_and_still_frees_everything(onnx_model, gpu, monkeypatch, tmp_path):
    _, path = onnx_model
    engine = _engine(path, gpu, monkeypatch, tmp_path, execute_ok=False)
    install_cudart(monkeypatch, gpu)
    with pytest.raises(RuntimeError, match="failed to enqueue"):
        trt_run_engine(str(engine), {"features": np.zeros((1, 6), np.float32)}, runs=1, warmup=0)
    assert gpu.memory == {} and gpu.events("stream_destroy")


def test_a_file_that_is_not_an_engine_is_refused_and_nothing_leaks(gpu, monkeypatch, tmp_path):
    install_tensorrt(monkeypatch, gpu)
    install_cudart(monkeypatch, gpu)
    bad = tmp_path / "bad.engine"
    bad.write_bytes(b"not an engine")
    with pytest.raises(RuntimeError, match="is not a TensorRT engine for this GPU"):
        trt_run_engine(str(bad), {}, runs=1)
    assert gpu.events("stream_destroy") and not gpu.events("malloc")


def test_time_batches_shares_one_memory_backend_when_given(onnx_model, gpu, monkeypatch, tmp_path):
    from kerascompress.runtime.tensorrt_engine import trt_device_memory

    _, path = onnx_model
    engine = _engine(path, gpu, monkeypatch, tmp_path)
    install_cudart(monkeypatch, gpu)
    memory = trt_device_memory()
    result = trt_time_batches(str(engine), {"features": np.ones((1, 6), np.float32)}, (1, 8), runs=4, memory=memory)
    assert set(result) == {1, 8} and all(r["median_ms"] >= 0 and r["p90_ms"] >= r["median_ms"] for r in result.values())
    assert len(gpu.events("stream_create")) == 1 and not gpu.events("stream_destroy")  # borrowed: left open
    memory.close()
    assert gpu.memory == {} and gpu.events("stream_destroy")


def test_the_generated_build_script_runs_with_and_without_reference_data(onnx_model, gpu, monkeypatch, tmp_path):
    from kerascompress.export.tensorrt import to_tensorrt
    from kerascompress.targets import load

    model, path = onnx_model
    install_tensorrt(monkeypatch, gpu, "11.5.0")
    install_cudart(monkeypatch, gpu)
    x = np.random.default_rng(2).standard_normal((3, 6)).astype(np.float32)
    for folder, kwargs in ((tmp_path / "ref", {"reference_model": model, "sample_data": x}), (tmp_path / "none", {})):
        to_tensorrt(path, load("nvidia-t4-sm75"), folder, batch_sizes=(1, 2), **kwargs)
        monkeypatch.setattr(sys, "argv", ["build_engine.py", "--runs", "3"])
        runpy.run_path(str(folder / "build_engine.py"), run_name="__main__")
        report = json.loads((folder / "engine_report.json").read_text())
        assert set(report["latency"]) == {"1", "2"}
        assert (folder / "model.engine").read_bytes().startswith(ENGINE_MAGIC)
    with_ref = json.loads((tmp_path / "ref" / "engine_report.json").read_text())
    assert with_ref["max_abs_error_vs_keras"]["logits"] < 1e-5
    assert "max_abs_error_vs_keras" not in json.loads((tmp_path / "none" / "engine_report.json").read_text())
    assert gpu.memory == {}


def _fake_gpu_on_path(monkeypatch, tmp_path, cc="7.5"):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text(f'#!/bin/sh\necho "Tesla T4, {cc}"\n')
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setitem(sys.modules, "pynvml", None)


def test_to_tensorrt_builds_times_and_checks_the_engine_where_tensorrt_and_the_gpu_are(onnx_model, gpu, monkeypatch, tmp_path):
    from kerascompress.export.tensorrt import to_tensorrt
    from kerascompress.targets import load

    model, path = onnx_model
    install_tensorrt(monkeypatch, gpu, "11.5.0")  # the T4 profile's kit version (no runtime_version: newest)
    install_cudart(monkeypatch, gpu)
    _fake_gpu_on_path(monkeypatch, tmp_path)
    x = np.random.default_rng(3).standard_normal((4, 6)).astype(np.float32)
    result = to_tensorrt(path, load("nvidia-t4-sm75"), tmp_path / "out", reference_model=model, sample_data=x,
                         batch_sizes=(1, 4), runs=3)
    assert result.built and result.engine_path.read_bytes().startswith(ENGINE_MAGIC)
    assert result.max_abs_error is not None and result.max_abs_error < 1e-5
    assert set(result.latency_ms) == {1, 4} and set(result.throughput_per_s) == {1, 4}
    assert gpu.memory == {}


def test_a_different_installed_tensorrt_or_gpu_means_not_built_here(onnx_model, gpu, monkeypatch, tmp_path):
    from kerascompress.export.tensorrt import to_tensorrt
    from kerascompress.targets import load

    _, path = onnx_model
    install_tensorrt(monkeypatch, gpu, "10.8.0")
    _fake_gpu_on_path(monkeypatch, tmp_path)
    result = to_tensorrt(path, load("nvidia-pascal-sm61"), tmp_path / "p")  # kit: 8.6.1
    assert result.status == ("engine not built here: the installed TensorRT 10.8.0 is not the 8.6.1 this kit is for "
                             "(profile runtime_version '<8.7')")
    install_tensorrt(monkeypatch, gpu, "11.5.0")
    result = to_tensorrt(path, load("nvidia-a100-sm80"), tmp_path / "a")
    assert result.status.startswith("engine not built here: this host's GPU is compute capability 7.5, the target is 8.0")


def test_a_built_engines_latency_and_error_reach_the_report(gpu, monkeypatch, tmp_path):
    import keras

    import kerascompress as kc
    from kerascompress.passes.quantize import Quantize

    install_tensorrt(monkeypatch, gpu, "11.5.0")
    install_cudart(monkeypatch, gpu)
    _fake_gpu_on_path(monkeypatch, tmp_path)
    keras.utils.set_random_seed(0)
    inp = keras.Input((8,))
    model = keras.Model(inp, keras.layers.Dense(4, activation="softmax")(keras.layers.Dense(16, activation="relu")(inp)))
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((64, 8)).astype(np.float32), rng.integers(0, 4, 64)
    result = kc.optimize(model, target="nvidia-t4-sm75", data=(x, y), recipe=[Quantize("fp16")],
                         output_dir=tmp_path / "run", verbose=False)
    report = result.report
    (line,) = [n for n in report.notes if "engine built and timed here" in n]
    error = float(line.split("max abs error vs Keras ")[1].split(";")[0])
    assert error < 1e-2  # the fp16 ONNX run by the fake engine against the float Keras model
    assert "batch 1:" in line and "batch 32:" in line
    assert report.final.latency_ms is not None and report.final.latency_ms >= 0
    assert result.artifacts["tensorrt_engine"].read_bytes().startswith(ENGINE_MAGIC)
    saved = json.loads((tmp_path / "run" / "report.json").read_text())
    assert saved["final"]["latency_ms"] == report.final.latency_ms
    assert gpu.memory == {}


def test_validate_runs_an_engine_through_the_runner(onnx_model, gpu, monkeypatch, tmp_path):
    from kerascompress.runtime.tensorrt_runner import TensorRTEngineModel

    _, path = onnx_model
    engine = _engine(path, gpu, monkeypatch, tmp_path)
    install_cudart(monkeypatch, gpu)
    runner = TensorRTEngineModel(engine)
    assert (runner.input_names, runner.output_names) == (["features"], ["logits"])
    x = np.random.default_rng(4).standard_normal((5, 6)).astype(np.float32)
    np.testing.assert_allclose(runner.predict(x), _reference(path, x), rtol=1e-6, atol=1e-6)
    assert runner.latency(runs=3, warmup=1, x=x).median_ms >= 0
    assert gpu.memory == {}


ALLOWED = {"time", "numpy", "tensorrt", "torch", "cuda"}


def _tree() -> ast.Module:
    return ast.parse(inspect.getsource(tensorrt_engine))


def test_the_module_imports_nothing_at_its_top():
    top = [n for n in _tree().body if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert top == []


def test_functions_import_only_what_the_device_has():
    used = set()
    for node in ast.walk(_tree()):
        if isinstance(node, ast.Import):
            used |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            used.add(node.module.split(".")[0])
    assert used <= ALLOWED, used - ALLOWED


def test_the_generated_script_carries_every_function():
    script = engine_script_source()
    for name in ("trt_build_engine", "trt_run_engine", "trt_time_batches"):
        assert f"def {name}(" in script
    compile(script, "build_engine.py", "exec")
