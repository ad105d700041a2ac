"""Quantization-aware training: placement, agreement of the int8 TFLite with the QAT model, gates."""
import keras
import numpy as np
import pytest
from keras import layers

from kerascompress import targets
from kerascompress.data.bundle import DataBundle
from kerascompress.errors import ExportError
from kerascompress.export.tflite import to_tflite
from kerascompress.passes.base import ModelState, PassContext
from kerascompress.passes.qat import QuantizationAwareTraining, activation_ranges
from kerascompress.passes.quantize import Quantize
from kerascompress.quant import fake_quant as fq
from kerascompress.quant.plan import PrecisionPlan
from kerascompress.runtime.litert import LiteRTModel
from kerascompress.targets.target import Kernel, Target

X86 = Target("x86-test", precisions={"fp32": Kernel.FAST, "fp16": Kernel.STORAGE, "int8": Kernel.FAST})
EDGETPU = Target("tpu-test", device="npu", precisions={"int8": Kernel.FAST}, full_integer_only=True)


@pytest.fixture(scope="module")
def bn_cnn(digits_data):
    """A digits CNN with Conv-BN-ReLU blocks, a residual Add and a softmax head."""
    x, y, _, _ = digits_data
    keras.utils.set_random_seed(2)
    inp = keras.Input((8, 8, 1), name="image")
    h = layers.Conv2D(16, 3, padding="same", use_bias=False, name="conv1")(inp)
    h = layers.BatchNormalization(name="bn1")(h)
    h = layers.ReLU(name="relu1")(h)
    r = layers.Conv2D(16, 3, padding="same", use_bias=False, name="conv2")(h)
    r = layers.BatchNormalization(name="bn2")(r)
    h = layers.ReLU(name="relu2")(layers.Add(name="add")([h, r]))
    h = layers.MaxPooling2D(name="pool")(h)
    h = layers.Flatten(name="flatten")(h)
    h = layers.Dense(32, activation="relu", name="fc1")(h)
    out = layers.Dense(10, activation="softmax", name="predictions")(h)
    model = keras.Model(inp, out, name="bn_cnn")
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
    model.fit(x, y, epochs=6, batch_size=64, verbose=0)
    return model


def agreement(a, b):
    """Fraction of samples whose top-1 class is the same in two output arrays."""
    return float(np.mean(np.argmax(a, -1) == np.argmax(b, -1)))


def _run_qat(model, target, digits_data, epochs=2):
    x, y, xt, yt = digits_data
    bundle = DataBundle(x, y, xt, yt, calibration_samples=256)
    ctx = PassContext(target=target, data=bundle, teacher=model, progress=lambda _m: None)
    return QuantizationAwareTraining(epochs=epochs).apply(ModelState(model), ctx)


def test_fake_quant_sits_where_the_converter_quantizes(bn_cnn):
    q = fq.fake_quant_model(bn_cnn)
    names = [l.name for l in q.model.layers]
    assert not any(isinstance(l, layers.BatchNormalization) for l in q.model.layers)  # folded
    assert isinstance(q.model.get_layer("conv1"), fq.QuantConv2D)
    assert q.model.get_layer("conv1").activation.__name__ == "relu"  # ReLU fused into the conv
    assert isinstance(q.model.get_layer("fc1"), fq.QuantDense)
    # conv2+bn2 has no activation (the ReLU follows the Add): its folded output, the Add's
    # output after the fused ReLU, the input and the logits are quantized - nothing else.
    assert set(q.activation_quantizers.values()) == {"image:input", "relu1", "bn2", "relu2", "fc1", "predictions"}
    assert names.index("predictions_fq") < names.index("predictions_softmax")


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


def test_ops_without_int8_kernels_are_named(digits_data):
    inp = keras.Input((8, 8, 1), name="image")
    h = layers.Flatten(name="flatten")(inp)
    h = layers.Dense(8, name="fc")(h)
    h = keras.ops.sin(h)
    model = keras.Model(inp, layers.Dense(3, name="head")(h))
    q = fq.fake_quant_model(model)
    fq.calibrate(q, digits_data[0][:64])
    with pytest.raises(ExportError, match="SIN"):
        to_tflite(q.model, PrecisionPlan("int8", int8_io=True), representative_data=digits_data[0][:64])


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


@pytest.mark.parametrize("profile", ["edgetpu", "cortex-m7"])
def test_integer_only_profiles_refuse_float_fallback(profile):
    target = targets.load(profile)
    assert target.full_integer_only
    assert Quantize("int8").gate(target, _state()).allowed
    assert Quantize("int8").apply(_state(), PassContext(target=target)).state.precision.int8_io
    for refused in (Quantize("mixed"), Quantize("int8", float_layers=["dense"]), Quantize("fp16")):
        assert not refused.gate(target, _state()).allowed
