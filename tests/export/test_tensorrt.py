"""TensorRT: the target gate, the no-TensorRT path (ONNX + trtexec + script), the real build.

The engine build itself needs the `tensorrt` package and an NVIDIA GPU; it is skipped
with the reason otherwise (never faked). Everything before it is tested here.
"""
from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from kerascompress.errors import UnsupportedOnTarget  # noqa: E402
from kerascompress.export.onnx import to_onnx  # noqa: E402
from kerascompress.export.tensorrt import (  # noqa: E402
    builder_flags,
    check_target,
    engine_script_source,
    kit_version,
    storage_only_notes,
    to_tensorrt,
    trt_major_version,
    trtexec_command,
)
from kerascompress.quant.plan import PrecisionPlan  # noqa: E402
from kerascompress.targets.target import Kernel, Target  # noqa: E402
from tests.helpers.models import small_cnn  # noqa: E402

F, S = Kernel.FAST, Kernel.STORAGE


def gpu(name, cc, sparse, **precisions):
    base = {"fp32": F, "fp16": F, "int8": F}
    base.update(precisions)
    return Target(name=name, runtime="tensorrt", device="gpu", compute_capability=cc, sparse_2_4=sparse, precisions=base)


T4 = gpu("t4-like", 7.5, False)
A100 = gpu("a100-like", 8.0, True, bf16=F)
ORIN = gpu("orin-like", 8.7, True, bf16=F)
L4 = gpu("l4-like", 8.9, True, bf16=F, fp8=F)
V100 = gpu("v100-like", 7.0, False)
CPU = Target(name="x86", runtime="litert", device="cpu", precisions={"fp32": F, "int8": F, "fp16": S})


def test_fp8_gate():
    assert any("fp8 needs compute capability 8.9" in r for r in check_target(A100, ["fp8"]))
    assert check_target(L4, ["fp8"]) == []
    # A profile that claims fp8 on an older GPU is still refused on the hardware rule.
    claims = gpu("bad-profile", 8.6, True, fp8=F)
    assert check_target(claims, ["fp8"]) != []


def test_sparsity_gate():
    reasons = check_target(T4, ["fp16"], sparsity=True)
    assert len(reasons) == 1 and "2:4 sparsity" in reasons[0] and "8.0" in reasons[0]
    assert check_target(A100, ["int8"], sparsity=True) == []
    assert check_target(ORIN, ["fp16", "int8"], sparsity=True) == []
    no_kernels = gpu("a100-no-sparse", 8.0, False)
    assert "does not list 2:4" in check_target(no_kernels, ["fp16"], sparsity=True)[0]


def test_generation_and_release_gates():
    assert check_target(T4, ["fp32", "fp16", "int8"]) == []
    assert any("bf16 needs compute capability 8.0" in r for r in check_target(T4, ["bf16"]))
    no_int8 = gpu("no-int8", 8.0, True, int8=Kernel.NONE)
    assert any("no int8 kernels" in r for r in check_target(no_int8, ["int8"]))
    assert "not TensorRT on a GPU" in check_target(CPU, ["fp32"])[0]
    assert storage_only_notes(gpu("slow-fp16", 7.5, False, fp16=S), ["fp16"])[0].startswith("fp16 on slow-fp16 is storage-only")


@pytest.mark.parametrize(
    "cc, version, refused",
    [(7.0, "11.5.0", "TensorRT 11.5.0 supports GPUs of compute capability 7.5+"),
     (7.0, "10.5.0", "TensorRT 10.5.0 supports GPUs of compute capability 7.5+"),
     (7.0, "10.4.0", None),  # Volta: 10.0-10.4 (10.1 support matrix, SM 7.0 or higher)
     (6.1, "10.0.1", "TensorRT 10.0.1 supports GPUs of compute capability 7.0+"),
     (6.1, "8.6.1", None), (5.2, "8.6.1", "TensorRT 8.6.1 supports GPUs of compute capability 6.0+")],
)
def test_the_gpu_floor_follows_the_tensorrt_version(cc, version, refused):
    reasons = check_target(gpu("g", cc, False, fp16=S), ["fp32"], trt_version=version)
    if refused is None:
        assert reasons == []
    else:
        assert len(reasons) == 1 and reasons[0].startswith(refused)


def test_the_gate_uses_the_profiles_runtime_version():
    pascal = dataclasses.replace(gpu("pascal", 6.1, False, fp16=S), runtime_version="<8.7")
    assert kit_version(pascal) == "8.6.1" and check_target(pascal, ["fp32", "int8"]) == []
    assert kit_version(T4) == "11.5.0"  # no runtime_version: the newest known release
    assert check_target(dataclasses.replace(pascal, runtime_version=""), ["int8"])[0].startswith(
        "TensorRT 11.5.0 supports GPUs of compute capability 7.5+")
    assert "TensorRT 8.6.1 does not build bf16" in check_target(
        dataclasses.replace(A100, runtime_version="<8.7"), ["bf16"])


def test_trtexec_and_builder_flags_per_version():
    shapes = {"x": [[1, 3], [8, 3], [32, 3]]}
    weak = trtexec_command("m.onnx", "m.engine", shapes, trt_version="8.6.1", precisions=("fp32", "fp16", "int8"))
    assert weak == "trtexec --onnx=m.onnx --saveEngine=m.engine --int8 --fp16 --minShapes=x:1x3 --optShapes=x:8x3 --maxShapes=x:32x3"
    assert builder_flags("8.6.1", ("fp32", "int8")) == ("INT8",)
    for version in ("10.3.0", "10.16.0", "11.5.0"):
        strong = trtexec_command("m.onnx", "m.engine", shapes, trt_version=version, precisions=("fp32", "int8"))
        assert "--stronglyTyped" in strong and "--int8" not in strong and "--fp16" not in strong
        assert builder_flags(version, ("fp32", "fp16", "int8")) == ()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = small_cnn()
    d = tmp_path_factory.mktemp("trt")
    calib = np.random.default_rng(0).uniform(-1, 1, (32, 16, 16, 3)).astype("float32")
    fp16 = to_onnx(model, d / "fp16.onnx", plan=PrecisionPlan("fp16"))
    int8 = to_onnx(model, d / "int8.onnx", plan=PrecisionPlan("int8"), calibration_data=calib)
    return model, fp16, int8, calib


def _not_built_reason() -> str | None:
    if trt_major_version() is None:
        return "tensorrt is not installed"
    return None


def test_without_tensorrt_writes_onnx_command_and_script(exported, tmp_path):
    model, _, int8, calib = exported
    out = tmp_path / "a100"
    result = to_tensorrt(int8.path, A100, out, sparsity=True, reference_model=model, sample_data=calib[:4], calibration_data=calib)
    if result.built:
        pytest.skip("TensorRT and a matching GPU are present: the engine was built (see the build test)")
    assert result.status.startswith("engine not built here: ")
    if _not_built_reason():
        assert result.status == "engine not built here: tensorrt is not installed"
    assert result.precisions == ("fp32", "int8") and result.engine_path is None
    assert (out / "model.onnx").read_bytes() == int8.path.read_bytes()
    assert result.trtexec_command.startswith("trtexec --onnx=model.onnx --saveEngine=model.engine --stronglyTyped")
    assert "--sparsity=enable" in result.trtexec_command
    assert "--minShapes=image:1x16x16x3" in result.trtexec_command and "--maxShapes=image:32x16x16x3" in result.trtexec_command
    assert result.trtexec_command in (out / "trtexec.sh").read_text()
    source = (out / "build_engine.py").read_text()
    compile(source, "build_engine.py", "exec")
    assert "def trt_build_engine" in source and "STRONGLY_TYPED" in source and "kerascompress" not in source.split('"""', 2)[2]
    cfg = json.loads((out / "build_config.json").read_text())
    assert cfg["sparsity"] is True and cfg["inputs"] == ["image"] and cfg["outputs"] == ["fc"]
    ref = np.load(out / "reference.npz")
    np.testing.assert_allclose(ref["output:fc"], model(calib[:4]).numpy(), atol=1e-6)
    assert np.load(out / "calibration.npz")["input:image"].shape == (32, 16, 16, 3)
    assert any("no calibration cache needed" in n for n in result.notes)


def test_sparsity_flag_only_where_allowed(exported, tmp_path):
    _, fp16, _, _ = exported
    dense = to_tensorrt(fp16.path, T4, tmp_path / "t4")
    assert "--sparsity" not in dense.trtexec_command and dense.precisions == ("fp32", "fp16")
    with pytest.raises(UnsupportedOnTarget, match="2:4 sparsity"):
        to_tensorrt(fp16.path, T4, tmp_path / "t4s", sparsity=True)
    with pytest.raises(UnsupportedOnTarget, match="not TensorRT"):
        to_tensorrt(fp16.path, CPU, tmp_path / "cpu")


def test_a_tensorrt_86_target_gets_a_weakly_typed_kit(exported, tmp_path):
    model, _, int8, calib = exported
    pascal = dataclasses.replace(gpu("pascal-like", 6.1, False, fp16=S), runtime_version="<8.7")
    result = to_tensorrt(int8.path, pascal, tmp_path, reference_model=model, sample_data=calib[:2])
    assert result.tensorrt_version == "8.6.1" and not result.built
    assert result.trtexec_command.startswith("trtexec --onnx=model.onnx --saveEngine=model.engine --int8 --minShapes=")
    assert "--stronglyTyped" not in result.trtexec_command and "--fp16" not in result.trtexec_command
    cfg = json.loads((tmp_path / "build_config.json").read_text())
    assert (cfg["tensorrt_version"], cfg["strongly_typed"], cfg["builder_flags"]) == ("8.6.1", False, ["INT8"])
    assert any("weakly typed: builder flags INT8" in n for n in result.notes)


def test_without_reference_data_the_config_names_no_reference_file(exported, tmp_path):
    _, fp16, _, _ = exported
    to_tensorrt(fp16.path, T4, tmp_path)
    cfg = json.loads((tmp_path / "build_config.json").read_text())
    assert cfg["reference"] is None and cfg["outputs"] == [] and cfg["strongly_typed"] is True
    assert not (tmp_path / "reference.npz").exists()
    assert 'if cfg.get("reference"):' in (tmp_path / "build_engine.py").read_text()


def test_int8_graph_refused_on_target_without_int8(exported, tmp_path):
    _, _, int8, _ = exported
    with pytest.raises(UnsupportedOnTarget, match="no int8 kernels"):
        to_tensorrt(int8.path, gpu("fp16-only", 8.0, True, int8=Kernel.NONE), tmp_path / "x")


def test_script_is_self_contained():
    source = engine_script_source()
    assert "import kerascompress" not in source and "from kerascompress" not in source
    assert "build_serialized_network" in source and "execute_async_v3" in source


def _gpu_present() -> bool:
    return shutil.which("nvidia-smi") is not None


def _why_no_build() -> str:
    if trt_major_version() is None:
        return "tensorrt does not import here (its -libs wheel cannot be installed on these machines)"
    if not _gpu_present():
        return "no NVIDIA GPU on this host"
    return ""


@pytest.mark.skipif(bool(_why_no_build()), reason=_why_no_build() or "n/a")
def test_build_engine_on_this_gpu(exported, tmp_path):  # pragma: no cover - needs TensorRT + GPU
    from kerascompress.export.tensorrt import _local_gpu_compute_capability

    model, fp16, _, calib = exported
    cc = _local_gpu_compute_capability()
    here = gpu("this-gpu", cc, cc >= 8.0)
    result = to_tensorrt(fp16.path, here, tmp_path, reference_model=model, sample_data=calib[:4], batch_sizes=(1, 4), runs=5)
    assert result.built, result.status
    assert result.engine_path.is_file()
    assert result.max_abs_error is not None and result.max_abs_error < 1e-2
    assert set(result.latency_ms) == {1, 4} and all(v["median_ms"] > 0 for v in result.latency_ms.values())
