"""Quantization-aware training: placement, agreement of the int8 TFLite with the QAT model, gates."""
import keras
import numpy as np
import pytest
from keras import layers

from kerascompress import targets
from kerascompress.data.bundle import DataBundle
from kerascompress.export.tflite import to_tflite
from kerascompress.passes.base import ModelState, PassContext
from kerascompress.passes.qat import QuantizationAwareTraining, activation_ranges
from kerascompress.quant.plan import PrecisionPlan
from kerascompress.runtime.litert import LiteRTModel
from kerascompress.targets.target import Kernel, Target

X86 = Target("x86-test", precisions={"fp32": Kernel.FAST, "fp16": Kernel.STORAGE, "int8": Kernel.FAST})
EDGETPU = Target("tpu-test", device="npu", precisions={"int8": Kernel.FAST}, full_integer_only=True)


def agreement(a, b):
    """Fraction of samples whose top-1 class is the same in two output arrays."""
    return float(np.mean(np.argmax(a, -1) == np.argmax(b, -1)))


def _run_qat(model, target, digits_data, epochs=2):
    x, y, xt, yt = digits_data
    bundle = DataBundle(x, y, xt, yt, calibration_samples=256)
    ctx = PassContext(target=target, data=bundle, teacher=model, progress=lambda _m: None)
    return QuantizationAwareTraining(epochs=epochs).apply(ModelState(model), ctx)


def test_qat_int8_tflite_agrees_with_the_qat_model(bn_cnn, digits_data):
    _, _, xt, yt = digits_data
    before = [w.copy() for w in bn_cnn.get_weights()]
    out = _run_qat(bn_cnn, X86, digits_data)
    assert all(np.array_equal(a, b) for a, b in zip(before, bn_cnn.get_weights()))  # caller's model untouched
    assert out.state.precision == PrecisionPlan("int8")
    qat_model = out.state.model
    ranges = activation_ranges(qat_model)
    assert len(ranges) == 6 and all(lo <= 0 < hi for lo, hi in ranges.values())
    reference = qat_model.predict(xt, verbose=0)
    data = to_tflite(qat_model, out.state.precision, representative_data=digits_data[0][:256])
    got = LiteRTModel(data).predict(xt)
    assert agreement(got, reference) >= 0.99
    float_acc = np.mean(bn_cnn.predict(xt, verbose=0).argmax(-1) == yt)
    assert np.mean(got.argmax(-1) == yt) >= float_acc - 0.02


def test_qat_for_an_integer_only_target_has_int8_io(bn_cnn, digits_data):
    _, _, xt, _ = digits_data
    out = _run_qat(bn_cnn, EDGETPU, digits_data, epochs=1)
    assert out.state.precision == PrecisionPlan("int8", int8_io=True)
    data = to_tflite(out.state.model, out.state.precision, representative_data=digits_data[0][:256])
    runner = LiteRTModel(data)
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=data)
    assert interp.get_input_details()[0]["dtype"] == np.int8 and interp.get_output_details()[0]["dtype"] == np.int8
    assert agreement(runner.predict(xt), out.state.model.predict(xt, verbose=0)) >= 0.99


def _state():
    return ModelState(keras.Sequential([keras.Input((4,)), layers.Dense(2)]))


@pytest.mark.parametrize("profile,allowed,why", [
    ("x86-avx512-vnni", True, "int8"),
    ("x86-avx2", True, "int8"),
    ("arm64-cortex-a72", True, "int8"),
    ("edgetpu", True, "int8"),
    ("cortex-m7", True, "int8"),
    ("nvidia-t4-sm75", False, "LiteRT"),
])
def test_qat_gate_per_profile(profile, allowed, why):
    gate = QuantizationAwareTraining().gate(targets.load(profile), _state())
    assert gate.allowed is allowed and why in gate.reason


def test_qat_is_refused_once_post_training_int8_met_the_budget():
    gate = QuantizationAwareTraining().gate(X86, _state().replace(precision=PrecisionPlan("int8")))
    assert not gate.allowed and "already" in gate.reason
    assert not QuantizationAwareTraining().gate(Target("fp", precisions={"fp32": Kernel.FAST}), _state()).allowed
