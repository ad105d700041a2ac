"""Gate decisions and plans of the Quantize pass, per kind of target."""
import keras
import pytest

from kerascompress import targets
from kerascompress.data.bundle import DataBundle
from kerascompress.errors import ConfigError
from kerascompress.passes.base import ModelState, PassContext
from kerascompress.passes.quantize import Quantize
from kerascompress.pipeline.measure import pass_context
from kerascompress.quant.plan import PrecisionPlan
from kerascompress.targets.target import Kernel, Target

X86 = Target(
    "x86-test", precisions={"fp32": Kernel.FAST, "fp16": Kernel.STORAGE, "int8": Kernel.FAST},
    sources={"precisions.fp16": "measured: FP16 computed in FP32"},
)
ARM_FP16 = Target("arm-test", arch="arm64", precisions={"fp32": Kernel.FAST, "fp16": Kernel.FAST, "int8": Kernel.FAST})
EDGETPU = Target("tpu-test", device="npu", precisions={"int8": Kernel.FAST}, full_integer_only=True)
NO_INT8 = Target("fp-only", precisions={"fp32": Kernel.FAST, "fp16": Kernel.FAST})
GPU = Target("gpu-test", runtime="tensorrt", device="gpu",
             precisions={"fp32": Kernel.FAST, "fp16": Kernel.FAST, "int8": Kernel.FAST})


@pytest.fixture
def state():
    inp = keras.Input((4,))
    return ModelState(keras.Model(inp, keras.layers.Dense(2)(inp)))


def test_fp16_on_x86_is_storage_only_with_source(state):
    gate = Quantize("fp16").gate(X86, state)
    assert gate.allowed and gate.benefit == "size"
    assert "storage-only" in gate.reason and "measured: FP16 computed in FP32" in gate.reason


def test_fp16_on_arm_with_fp16_arithmetic_buys_speed(state):
    gate = Quantize("fp16").gate(ARM_FP16, state)
    assert gate.allowed and gate.benefit == "size+latency"


A76 = "processor\t: 0\nFeatures\t: fp asimd fphp asimdhp asimddp\nCPU architecture: 8\n"
AVX2 = "processor\t: 0\nflags\t\t: fpu avx fma f16c avx2\n"


def _host(monkeypatch, text, machine):
    from kerascompress.targets import cpuinfo

    monkeypatch.setattr(cpuinfo, "read_cpuinfo_text", lambda: text)
    monkeypatch.setattr(cpuinfo, "host_machine", lambda: machine)


def test_fp16_gate_says_what_computes_in_fp16_and_where_accuracy_is_measured(state, monkeypatch):
    from kerascompress.targets import load

    arm = load("arm64-fp16")
    _host(monkeypatch, AVX2, "x86_64")
    gate = Quantize("fp16").gate(arm, state)
    assert gate.benefit == "size+latency" and "reduced_precision_support=fp16accfp16" in gate.reason
    assert "accuracy here is measured with FP32 arithmetic" in gate.reason and "validate there" in gate.reason
    _host(monkeypatch, A76, "aarch64")  # on the target itself the measured accuracy is the FP16 one
    assert "measured with FP32" not in Quantize("fp16").gate(arm, state).reason

    a72 = Quantize("fp16").gate(load("arm64-cortex-a72"), state)
    assert a72.benefit == "size" and "fp16accfp32" in a72.reason and "computes in FP32" in a72.reason
    t4 = Quantize("fp16").gate(load("nvidia-t4-sm75"), state)
    assert t4.benefit == "size+latency" and "TensorRT builds FP16 kernels" in t4.reason
    pascal = Quantize("fp16").gate(load("nvidia-pascal-sm61"), state)
    assert pascal.benefit == "size" and "computed in a wider format" in pascal.reason


def test_the_fp16_artifact_asks_for_fp16_accumulation_exactly_where_the_target_computes_fp16(state):
    from kerascompress.export.tflite_graph import reduced_precision_support
    from kerascompress.pipeline.artifacts import build_artifact
    from kerascompress.targets import load

    fp16 = state.replace(precision=PrecisionPlan("fp16"))
    written = {name: reduced_precision_support(build_artifact(fp16, load(name)).data)
               for name in ("arm64-fp16", "arm64-cortex-a72", "x86-avx2")}
    assert written == {"arm64-fp16": "fp16accfp16", "arm64-cortex-a72": "fp16accfp32", "x86-avx2": "fp16accfp32"}
    assert reduced_precision_support(build_artifact(state, load("arm64-fp16")).data) is None  # float32: no request


def test_integer_only_target_refuses_everything_but_full_int8(state):
    for mode in ("fp16", "dynamic"):
        gate = Quantize(mode).gate(EDGETPU, state)
        assert not gate.allowed and "full-integer" in gate.reason
    assert Quantize("int8").gate(EDGETPU, state).allowed
    refused = Quantize("int8", float_layers=["dense"]).gate(EDGETPU, state)
    assert not refused.allowed and "no float fallback" in refused.reason


def test_int8_refused_without_int8_kernels(state):
    gate = Quantize("int8").gate(NO_INT8, state)
    assert not gate.allowed and "no int8 kernels" in gate.reason


def test_second_precision_pass_is_refused_after_the_first(state):
    quantized = state.replace(precision=PrecisionPlan("int8"))
    gate = Quantize("fp16").gate(X86, quantized)
    assert not gate.allowed and "already" in gate.reason


def test_apply_sets_int8_io_on_integer_only_targets(state):
    out = Quantize("int8").apply(state, PassContext(target=EDGETPU))
    assert out.state.precision == PrecisionPlan("int8", int8_io=True)
    assert out.state.model is state.model
    out = Quantize("int8").apply(state, PassContext(target=X86))
    assert out.state.precision.int8_io is False


def test_unknown_mode_is_a_config_error():
    with pytest.raises(ConfigError, match="mode"):
        Quantize("int3")


def test_int16x8_is_allowed_on_an_integer_only_mcu_with_int16_kernels(state):
    mcu = Target("mcu-test", device="mcu", arch="armv7m", full_integer_only=True,
                 precisions={"int8": Kernel.FAST, "int16x8": Kernel.FAST})
    gate = Quantize("int16x8").gate(mcu, state)
    assert gate.allowed and gate.benefit == "size+latency"
    assert not Quantize("int16x8").gate(X86, state).allowed  # x86 profile lists no int16x8 kernels
    assert Quantize("int16x8").needs_data


def test_quantize_mixed_pass_puts_plan_cost_and_savings_in_details(sensitive, digits_data):
    x, y, xt, yt = digits_data
    bundle = DataBundle(x, y, xt, yt, calibration_samples=256)
    out = Quantize("mixed", max_accuracy_drop=0.01).apply(
        ModelState(sensitive), pass_context(X86, bundle, progress=lambda _m: None))
    assert out.state.model is sensitive
    assert out.state.precision.mode == "int8" and set(out.state.precision.float_layers) == {"conv1", "conv2"}
    assert out.details["budget_met"] and out.details["budget_points"] == 1.0
    assert {"cost", "savings", "sensitivity", "candidates_evaluated", "layer_precisions"} <= set(out.details)


def test_mixed_gate_per_target():
    state = ModelState(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]))
    assert Quantize("mixed").gate(X86, state).allowed
    gate = Quantize("mixed").gate(GPU, state)
    assert gate.allowed and "fp16" in gate.reason
    assert "cannot mix fp16 and int8" in Quantize("mixed").gate(X86, state).reason
    refused = Quantize("mixed").gate(EDGETPU, state)
    assert not refused.allowed and "full-integer" in refused.reason
    assert not Quantize("mixed").gate(NO_INT8, state).allowed
    assert not Quantize("mixed").gate(X86, state.replace(precision=PrecisionPlan("int8"))).allowed


@pytest.mark.parametrize("profile", ["edgetpu", "cortex-m7"])
def test_integer_only_profiles_refuse_float_fallback(profile):
    target = targets.load(profile)
    assert target.full_integer_only
    assert Quantize("int8").gate(target, _tiny_state()).allowed
    assert Quantize("int8").apply(_tiny_state(), PassContext(target=target)).state.precision.int8_io
    for refused in (Quantize("mixed"), Quantize("int8", float_layers=["dense"]), Quantize("fp16")):
        assert not refused.gate(target, _tiny_state()).allowed


def _tiny_state():
    return ModelState(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]))
