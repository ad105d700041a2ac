"""Sparsity: exact N:M and unstructured masks that survive fine-tuning and int8 export; honest gates."""
from __future__ import annotations

import gzip

import keras
import numpy as np
import pytest

from kerascompress.data.bundle import DataBundle
from kerascompress.errors import ConfigError
from kerascompress.export.tflite_inspect import tflite_kernel_stats
from kerascompress.models.io import weights_digest
from kerascompress.passes.base import ModelState, PassContext
from kerascompress.passes.sparsity import (
    Sparsity,
    nm_mask,
    parse_pattern,
    polynomial_fraction,
    satisfies_nm,
    unstructured_mask,
)
from kerascompress.targets import Target, load

SPARSE_24 = ("conv2.kernel", "fc1.kernel", "predictions.kernel")  # conv1 has 1 input channel


def _ctx(digits_data, target: str = "x86-avx2") -> PassContext:
    x, y, xt, yt = digits_data
    return PassContext(load(target), DataBundle(x, y, xt, yt), progress=lambda _m: None)


def _kernel(model: keras.Model, key: str) -> np.ndarray:
    layer, attr = key.split(".")
    return keras.ops.convert_to_numpy(getattr(model.get_layer(layer), attr))


def _accuracy(model: keras.Model, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.argmax(model.predict(x, verbose=0), -1) == y))


def test_nm_mask_keeps_the_two_largest_of_every_four_inputs() -> None:
    k = np.random.default_rng(0).standard_normal((3, 3, 8, 5)).astype(np.float32)
    mask = nm_mask(k, 2, 4, axis=-2)
    groups = np.moveaxis(k, 2, -1).reshape(-1, 4)
    gmask = np.moveaxis(mask, 2, -1).reshape(-1, 4)
    assert np.all(gmask.sum(1) == 2)
    kept_min = np.where(gmask == 1, np.abs(groups), np.inf).min(1)
    dropped_max = np.where(gmask == 0, np.abs(groups), -np.inf).max(1)
    assert np.all(kept_min >= dropped_max)
    assert satisfies_nm(k * mask, 2, 4) and not satisfies_nm(k, 2, 4)
    # the groups run along input channels: a pattern along the output axis does not count
    k8 = np.random.default_rng(2).standard_normal((3, 3, 8, 8)).astype(np.float32)
    assert satisfies_nm(k8 * nm_mask(k8, 2, 4, axis=-1), 2, 4, axis=-1)
    assert not satisfies_nm(k8 * nm_mask(k8, 2, 4, axis=-1), 2, 4, axis=-2)
    with pytest.raises(ValueError):
        nm_mask(np.ones((6, 3)), 2, 4, axis=0)


def test_unstructured_mask_level_is_exact() -> None:
    k = np.random.default_rng(1).standard_normal((37, 11))
    for s in (0.1, 0.5, 0.73):
        assert int((unstructured_mask(k, s) == 0).sum()) == round(s * k.size)


def test_parse_pattern_and_schedule() -> None:
    assert parse_pattern("2:4") == (2, 4) and parse_pattern("unstructured") is None
    for bad in ("4:2", "2-4", "0:4"):
        with pytest.raises(ConfigError):
            parse_pattern(bad)
    assert polynomial_fraction(0, 100) == 0.0 and polynomial_fraction(60, 100) == 1.0
    assert 0.5 < polynomial_fraction(20, 100) < 1.0  # fast early
    assert Sparsity("2:4").sparsity == 0.5 and Sparsity("1:4").sparsity == 0.75


@pytest.mark.parametrize("schedule", ["oneshot", "polynomial"])
def test_2_4_pattern_is_exact_after_finetuning(schedule: str, digits_cnn, digits_data) -> None:
    x, y, xt, yt = digits_data
    digest = weights_digest(digits_cnn)
    out = Sparsity("2:4", schedule=schedule, finetune_epochs=2, learning_rate=1e-3).apply(
        ModelState(digits_cnn), _ctx(digits_data))
    assert weights_digest(digits_cnn) == digest
    model = out.state.model
    for key in SPARSE_24:
        k = _kernel(model, key)
        groups = np.moveaxis(k, -2, -1).reshape(-1, 4)
        assert np.all((groups == 0).sum(1) >= 2), key
        assert out.details["layers"][key]["pattern_ok"] and out.details["layers"][key]["sparsity"] == 0.5
    conv1 = out.details["layers"]["conv1.kernel"]
    assert conv1["sparse"] is False and "not a multiple of 4" in conv1["reason"]
    np.testing.assert_array_equal(_kernel(model, "conv1.kernel") != 0, _kernel(digits_cnn, "conv1.kernel") != 0)
    assert out.details["schedule"] == schedule
    assert out.details["finetune"]["steps"] > 0
    assert _accuracy(model, xt, yt) > _accuracy(digits_cnn, xt, yt) - 0.04


def test_unstructured_level_is_exact_after_gradual_finetuning(digits_cnn, digits_data) -> None:
    out = Sparsity("unstructured", 0.6, schedule="polynomial", initial_sparsity=0.2, finetune_epochs=2,
                   update_every=5).apply(ModelState(digits_cnn), _ctx(digits_data))
    for key in ("conv1.kernel", "conv2.kernel", "fc1.kernel", "predictions.kernel"):
        k = _kernel(out.state.model, key)
        assert int((k == 0).sum()) == round(0.6 * k.size), key
    assert out.details["sparsity_over_all_kernels"] == pytest.approx(0.6, abs=1e-3)


def test_oneshot_without_data_and_polynomial_fallback(digits_cnn, digits_data) -> None:
    ctx = PassContext(load("x86-avx2"), None, progress=lambda _m: None)
    out = Sparsity("unstructured", 0.5, schedule="polynomial").apply(ModelState(digits_cnn), ctx)
    assert out.details["schedule"] == "oneshot" and "schedule_note" in out.details
    assert out.details["sparsity_over_all_kernels"] == pytest.approx(0.5, abs=1e-3)
    assert not Sparsity().needs_labels and Sparsity(finetune_epochs=1).needs_labels


@pytest.mark.parametrize(
    "profile, benefit",
    [("x86-avx2", "compressed-size"), ("nvidia-t4-sm75", "compressed-size"), ("nvidia-a100-sm80", "size+latency"),
     ("nvidia-jetson-orin-sm87", "size+latency")],
)
def test_2_4_gate_per_profile(profile: str, benefit: str, digits_cnn) -> None:
    gate = Sparsity("2:4").gate(load(profile), ModelState(digits_cnn))
    assert gate.allowed and gate.benefit == benefit, gate.reason
    if benefit == "compressed-size":
        assert gate.reason.startswith(f"compressed (gzip) size only: {profile}'s runtime computes dense")
    else:
        assert "sparse tensor cores" in gate.reason
    if profile == "nvidia-t4-sm75":
        assert "7.5" in gate.reason


@pytest.mark.parametrize("profile", ["x86-avx2", "nvidia-t4-sm75", "nvidia-a100-sm80", "nvidia-jetson-orin-sm87"])
def test_unstructured_and_other_nm_gates_are_size_only(profile: str, digits_cnn) -> None:
    for p in (Sparsity("unstructured", 0.5), Sparsity("1:4")):
        gate = p.gate(load(profile), ModelState(digits_cnn))
        assert gate.benefit == "compressed-size" and "size only" in gate.reason


def test_2_4_gate_trusts_compute_capability_over_a_wrong_flag(digits_cnn) -> None:
    wrong = Target(name="odd-turing", runtime="tensorrt", device="gpu", compute_capability=7.5, sparse_2_4=True)
    assert Sparsity("2:4").gate(wrong, ModelState(digits_cnn)).benefit == "compressed-size"
    cpu = Target(name="cpu-with-flag", runtime="litert", sparse_2_4=True)
    assert Sparsity("2:4").gate(cpu, ModelState(digits_cnn)).benefit == "compressed-size"
    sparse_npu = Target(name="sparse-npu", runtime="litert", unstructured_sparsity=True)
    assert Sparsity("unstructured").gate(sparse_npu, ModelState(digits_cnn)).benefit == "size+latency"


def test_int8_tflite_keeps_the_2_4_pattern_and_only_gzip_shrinks(digits_cnn, digits_data) -> None:
    from kerascompress.export.tflite import to_tflite

    x = digits_data[0]
    sparse = Sparsity("2:4").apply(ModelState(digits_cnn), _ctx(digits_data)).state.model
    dense_b = to_tflite(digits_cnn, "int8", representative_data=x[:100], num_samples=100)
    sparse_b = to_tflite(sparse, "int8", representative_data=x[:100], num_samples=100)
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interp = Interpreter(model_content=sparse_b,
                         experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interp.allocate_tensors()
    stats = tflite_kernel_stats(sparse_b)
    by_name = {d["name"]: d["index"] for d in interp.get_tensor_details()}
    checked = 0
    for s in stats:
        if s["zero_fraction"] < 0.5:
            continue  # conv1, left dense
        w = interp.get_tensor(by_name[s["name"]])  # TFLite layout: (out, [kh, kw,] in)
        assert satisfies_nm(w, 2, 4, axis=-1), s["name"]
        checked += 1
    assert checked == 3
    assert len(sparse_b) == pytest.approx(len(dense_b), rel=0.02)
    assert len(gzip.compress(sparse_b, 9)) < 0.9 * len(gzip.compress(dense_b, 9))


def test_2_4_skips_kernels_without_an_input_channel_reduction(digits_data) -> None:
    from keras import layers

    keras.utils.set_random_seed(5)
    inp = keras.Input((8, 8, 1))
    h = layers.Conv2D(8, 3, padding="same", name="stem")(inp)
    h = layers.DepthwiseConv2D(3, padding="same", name="dw")(h)
    h = layers.SeparableConv2D(8, 3, padding="same", name="sep")(h)
    h = layers.Conv2DTranspose(8, 3, padding="same", name="up")(h)
    h = layers.Conv2D(12, 1, name="pw")(h)
    out = layers.Dense(10, name="head")(layers.GlobalAveragePooling2D()(h))
    res = Sparsity("2:4", min_weights=0).apply(ModelState(keras.Model(inp, out)), _ctx(digits_data))
    d = res.details["layers"]
    assert {k for k, v in d.items() if v["sparse"]} == {"sep.pointwise_kernel", "pw.kernel", "head.kernel"}
    assert "DepthwiseConv2D" in d["dw.kernel"]["reason"] and "Conv2DTranspose" in d["up.kernel"]["reason"]
    assert all(d[k]["pattern_ok"] for k in ("sep.pointwise_kernel", "pw.kernel", "head.kernel"))
