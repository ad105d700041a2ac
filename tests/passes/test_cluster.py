"""Cluster: <= k values per kernel (and per channel), through fine-tuning and int8 export; honest gates."""
from __future__ import annotations

import gzip

import keras
import numpy as np
import pytest
from keras import layers

from kerascompress.data.bundle import DataBundle
from kerascompress.errors import ConfigError
from kerascompress.export.tflite_inspect import kernel_summary, tflite_kernel_stats
from kerascompress.models.io import weights_digest
from kerascompress.passes.base import ModelState, PassContext
from kerascompress.passes.cluster import INITS, Cluster, kmeans_1d
from kerascompress.targets import Target, load

KERNELS = ("conv1.kernel", "conv2.kernel", "fc1.kernel", "predictions.kernel")


def _ctx(digits_data, target: str = "x86-avx2") -> PassContext:
    x, y, xt, yt = digits_data
    return PassContext(load(target), DataBundle(x, y, xt, yt), progress=lambda _m: None)


def _accuracy(model: keras.Model, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.argmax(model.predict(x, verbose=0), -1) == y))


def _kernel(model: keras.Model, key: str) -> np.ndarray:
    layer, attr = key.split(".")
    return keras.ops.convert_to_numpy(getattr(model.get_layer(layer), attr))


@pytest.mark.parametrize("init", INITS)
def test_kmeans_1d_gives_at_most_k_values_and_beats_uniform_rounding(init: str) -> None:
    v = np.random.default_rng(0).standard_normal(5000)
    cents, labels = kmeans_1d(v, 8, init=init)
    assert cents.size <= 8 and np.all(np.diff(cents) > 0)
    err = np.mean((v - cents[labels]) ** 2)
    grid = np.linspace(v.min(), v.max(), 8)
    uniform = np.mean((v - grid[np.abs(v[:, None] - grid).argmin(1)]) ** 2)
    assert err < uniform


def test_per_tensor_clustering_leaves_k_values_and_the_callers_model(digits_cnn, digits_data) -> None:
    digest = weights_digest(digits_cnn)
    out = Cluster(n_clusters=8).apply(ModelState(digits_cnn), _ctx(digits_data))
    assert weights_digest(digits_cnn) == digest
    model = out.state.model
    for key in KERNELS:
        assert np.unique(_kernel(model, key)).size <= 8, key
        assert out.details["layers"][key]["unique_values"] <= 8
    assert np.unique(_kernel(digits_cnn, "fc1.kernel")).size > 1000  # the original is untouched
    # biases are not clustered
    assert np.unique(keras.ops.convert_to_numpy(model.get_layer("fc1").bias)).size > 8
    assert "gzip" in out.details["does_not_buy"] and "latency" in out.details["does_not_buy"]


def test_per_channel_clustering_bounds_every_output_channel(digits_cnn, digits_data) -> None:
    out = Cluster(n_clusters=4, per_channel=True, init="linear").apply(ModelState(digits_cnn), _ctx(digits_data))
    for key in KERNELS:
        k = _kernel(out.state.model, key)
        per_channel = max(np.unique(k[..., c]).size for c in range(k.shape[-1]))
        assert per_channel <= 4, key
        assert out.details["layers"][key]["max_unique_per_channel"] <= 4


def test_cluster_preserving_finetuning_keeps_k_values_and_recovers_accuracy(digits_cnn, digits_data) -> None:
    x, y, xt, yt = digits_data
    ctx = _ctx(digits_data)
    plain = Cluster(n_clusters=4, init="density").apply(ModelState(digits_cnn), ctx).state.model
    tuned_out = Cluster(n_clusters=4, init="density", finetune_epochs=2, learning_rate=1e-3).apply(
        ModelState(digits_cnn), ctx)
    tuned = tuned_out.state.model
    for key in KERNELS:
        assert np.unique(_kernel(tuned, key)).size <= 4, key
    assert not np.array_equal(_kernel(tuned, "fc1.kernel"), _kernel(plain, "fc1.kernel"))
    assert tuned_out.details["finetune"]["steps"] == 2 * int(np.ceil(len(x) / 64))
    base, before, after = _accuracy(digits_cnn, xt, yt), _accuracy(plain, xt, yt), _accuracy(tuned, xt, yt)
    assert after >= before - 0.01
    assert after > base - 0.05, (base, before, after)


def test_skip_layers_first_last_and_small_kernels(digits_cnn, digits_data) -> None:
    ctx = _ctx(digits_data)
    out = Cluster(n_clusters=8, skip_first=True, skip_last=True).apply(ModelState(digits_cnn), ctx)
    d = out.details["layers"]
    assert d["conv1.kernel"]["clustered"] is False and "first" in d["conv1.kernel"]["reason"]
    assert d["predictions.kernel"]["clustered"] is False and "last" in d["predictions.kernel"]["reason"]
    np.testing.assert_array_equal(_kernel(out.state.model, "conv1.kernel"), _kernel(digits_cnn, "conv1.kernel"))
    out = Cluster(n_clusters=8, skip_layers=["fc1"], min_weights=1000).apply(ModelState(digits_cnn), ctx)
    d = out.details["layers"]
    assert not d["fc1.kernel"]["clustered"] and "min_weights" in d["conv1.kernel"]["reason"]
    assert d["conv2.kernel"]["clustered"]
    with pytest.raises(ConfigError, match="skip_layers"):
        Cluster(skip_layers=["nope"]).apply(ModelState(digits_cnn), ctx)


def test_existing_zeros_survive_clustering(digits_cnn, digits_data) -> None:
    from kerascompress.passes.sparsity import Sparsity

    sparse = Sparsity("unstructured", 0.6).apply(ModelState(digits_cnn), _ctx(digits_data)).state
    out = Cluster(n_clusters=8).apply(sparse, _ctx(digits_data))
    for key in KERNELS:
        before, after = _kernel(sparse.model, key), _kernel(out.state.model, key)
        assert np.all(after[before == 0] == 0)
        assert np.mean(after == 0) == pytest.approx(0.6, abs=0.01)
        assert np.unique(after).size <= 8


@pytest.mark.parametrize("profile", ["x86-avx2", "nvidia-jetson-orin-sm87", "nvidia-t4-sm75", "nvidia-a100-sm80"])
def test_gate_is_size_only_where_the_runtime_computes_dense(profile: str, digits_cnn) -> None:
    target = load(profile)
    gate = Cluster().gate(target, ModelState(digits_cnn))
    assert gate.allowed and gate.benefit == "compressed-size"
    assert gate.reason.startswith(f"compressed (gzip) size only: {profile}'s runtime computes dense")


def test_gate_claims_latency_only_when_the_profile_says_so(digits_cnn) -> None:
    palettized = Target(name="palette-npu", runtime="litert", device="npu", clustered_weights=True,
                        sources={"clustered_weights": "vendor datasheet"})
    gate = Cluster().gate(palettized, ModelState(digits_cnn))
    assert gate.benefit == "size+latency" and "vendor datasheet" in gate.reason


def test_int8_tflite_of_a_clustered_model(digits_cnn, digits_data) -> None:
    """Per-channel int8 keeps <= k codes per output channel; per tensor it can exceed k.

    Measured on this model: the converter quantizes weights per output channel with the
    scale set by each channel's own largest magnitude, so the same centroid maps to
    different int8 codes in different channels; a per-tensor-clustered kernel then holds
    up to min(256, k x channels) codes, k per channel. gzip still shrinks.
    """
    from kerascompress.export.tflite import to_tflite

    x = digits_data[0]
    k = 8
    clustered = Cluster(n_clusters=k).apply(ModelState(digits_cnn), _ctx(digits_data)).state.model
    plain_int8 = to_tflite(digits_cnn, "int8", representative_data=x[:100], num_samples=100)
    cl_int8 = to_tflite(clustered, "int8", representative_data=x[:100], num_samples=100)
    stats = tflite_kernel_stats(cl_int8)
    assert len(stats) == 4 and all(s["dtype"] == "int8" and s["per_channel_quantized"] for s in stats)
    assert all(s["max_unique_per_channel"] <= k for s in stats), stats
    assert max(s["unique_values"] for s in stats) <= 256
    plain_stats = tflite_kernel_stats(plain_int8)
    assert max(s["unique_values"] for s in plain_stats) > 100  # the unclustered int8 uses the code range
    assert len(cl_int8) == pytest.approx(len(plain_int8), rel=0.02)  # raw size unchanged
    assert len(gzip.compress(cl_int8, 9)) < 0.8 * len(gzip.compress(plain_int8, 9))
    summary = kernel_summary(cl_int8)
    assert summary["max_unique_values_per_channel"] <= k and summary["dtype"] == ["int8"]
    assert summary["gzip_bytes"] == len(gzip.compress(cl_int8, 9)) and len(summary["per_kernel"]) == 4


def test_batchnorm_folding_breaks_per_tensor_counts_but_not_per_channel(digits_data) -> None:
    """TFLite folds a following BatchNormalization into the conv kernel (a scale per output
    channel), so per-tensor clusters become k values per channel in the float file too."""
    from kerascompress.export.tflite import to_tflite

    x, y, _, _ = digits_data
    keras.utils.set_random_seed(3)
    inp = keras.Input((8, 8, 1))
    h = layers.Conv2D(16, 3, padding="same", use_bias=False, name="conv")(inp)
    h = layers.BatchNormalization(name="bn")(h)
    h = layers.ReLU()(h)
    h = layers.GlobalAveragePooling2D()(h)
    out = layers.Dense(10, activation="softmax", name="head")(h)
    model = keras.Model(inp, out)
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x[:512], y[:512], epochs=1, verbose=0)
    clustered = Cluster(n_clusters=4, min_weights=0).apply(ModelState(model), _ctx(digits_data)).state.model
    stats = {s["op"]: s for s in tflite_kernel_stats(to_tflite(clustered, "float32"))}
    conv, head = stats["CONV_2D"], stats["FULLY_CONNECTED"]
    assert head["unique_values"] <= 4
    assert conv["max_unique_per_channel"] <= 4
    assert conv["unique_values"] > 4  # BatchNorm folded into the kernel


# --------------------------------------------------------------------------- tf_keras through tfmot


def test_tf_keras_model_clustered_through_tfmot_end_to_end(digits_data) -> None:
    from kerascompress.legacy.tfmot import missing_reason

    reason = missing_reason()
    if reason:
        pytest.skip(f"tfmot path not installed: {reason}")
    import os

    saved = os.environ.get("TF_USE_LEGACY_KERAS")
    import tf_keras

    x, y, _, _ = digits_data
    inp = tf_keras.Input((8, 8, 1))
    h = tf_keras.layers.Conv2D(8, 3, activation="relu")(inp)
    h = tf_keras.layers.Flatten()(h)
    out = tf_keras.layers.Dense(10, activation="softmax")(h)
    legacy = tf_keras.Model(inp, out)
    before = [w.copy() for w in legacy.get_weights()]
    ctx = PassContext(load("x86-avx2"), DataBundle(x, y, x[:100], y[:100]), progress=lambda _m: None)
    result = Cluster(n_clusters=8, finetune_epochs=1).apply(ModelState(legacy), ctx)
    assert result.details["backend"] == "tfmot"
    for w in (l.kernel.numpy() for l in result.state.model.layers if hasattr(l, "kernel")):
        assert np.unique(w).size <= 8
    assert all(np.array_equal(a, b) for a, b in zip(before, legacy.get_weights()))
    assert os.environ.get("TF_USE_LEGACY_KERAS") == saved


def test_optimize_keeps_cluster_and_reports_gzip_gain(digits_cnn, digits_data) -> None:
    """Through the driver: raw size unchanged (so not rolled back), gzip smaller, caller untouched."""
    import kerascompress as kc
    from kerascompress.pipeline.types import Constraints

    x, y, xt, yt = digits_data
    digest = weights_digest(digits_cnn)
    result = kc.optimize(
        digits_cnn, target=load("x86-avx2"), data={"train": (x, y), "eval": (xt, yt)}, recipe=[Cluster(16)],
        constraints=Constraints(max_accuracy_drop=0.05, max_slowdown=100.0), verbose=False, latency_runs=3,
    )
    (step,) = result.report.steps
    assert step.status == "applied" and step.benefit == "compressed-size", step.reason
    assert step.after.size_bytes == pytest.approx(step.before.size_bytes, rel=0.001)
    assert step.after.gzip_bytes < 0.5 * step.before.gzip_bytes
    # the driver reports unique values per kernel read back from the exported file
    assert 0 < step.details["artifact"]["max_unique_values_per_kernel"] <= 16  # no BatchNorm folded in here
    assert weights_digest(digits_cnn) == digest


def test_depthwise_separable_transpose_and_nested_kernels_are_clustered_per_channel(digits_data) -> None:
    keras.utils.set_random_seed(5)
    inner_in = keras.Input((8, 8, 8))
    inner = keras.Model(inner_in, layers.Conv2D(8, 3, padding="same", name="inner_conv")(inner_in), name="inner")
    inp = keras.Input((8, 8, 1))
    h = layers.Conv2D(8, 3, padding="same", name="stem")(inp)
    h = layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="dw")(h)
    h = layers.SeparableConv2D(8, 3, padding="same", name="sep")(h)
    h = layers.Conv2DTranspose(8, 3, padding="same", name="up")(h)
    h = inner(h)
    out = layers.Dense(10, name="head")(layers.GlobalAveragePooling2D()(h))
    model = keras.Model(inp, out)
    res = Cluster(n_clusters=3, per_channel=True, min_weights=0).apply(ModelState(model), _ctx(digits_data))
    m = res.state.model
    assert set(res.details["layers"]) == {"stem.kernel", "dw.kernel", "sep.depthwise_kernel", "sep.pointwise_kernel",
                                          "up.kernel", "inner_conv.kernel", "head.kernel"}
    dw = keras.ops.convert_to_numpy(m.get_layer("dw").kernel)  # (kh, kw, in, multiplier)
    assert max(np.unique(dw[:, :, c, j]).size for c in range(8) for j in range(2)) <= 3
    up = keras.ops.convert_to_numpy(m.get_layer("up").kernel)  # (kh, kw, out, in)
    assert max(np.unique(up[:, :, c, :]).size for c in range(8)) <= 3
    nested = keras.ops.convert_to_numpy(m.get_layer("inner").get_layer("inner_conv").kernel)
    assert max(np.unique(nested[..., c]).size for c in range(8)) <= 3
    x = digits_data[0][:4]
    assert np.all(np.isfinite(m.predict(x, verbose=0)))
