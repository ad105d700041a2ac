"""Benchmark: tfmot's pipelines on tf_keras twins of our Fashion-MNIST models.

The side-by-side asked for by issues 3, 5 and 7. tensorflow-model-optimization (tfmot)
only works on legacy tf_keras models, and tf_keras needs the FULL `tensorflow` wheel,
which conflicts with the tensorflow-cpu our library uses. So this script runs ONLY in
its own virtual environment, outside the repository, and does not import kerascompress
(which needs Keras 3): the two models are re-declared here with tf_keras, with the same
layers, names and widths as `kerascompress.examples.zoo.small_cnn` and `kerascompress.examples.zoo.residual_cnn`.

Create the environment once (never in the system Python):

    python3 -m venv /tmp/tfmot_venv
    /tmp/tfmot_venv/bin/pip install tensorflow==2.21.0 numpy
    /tmp/tfmot_venv/bin/pip install --no-deps tf-keras==2.21.0 tensorflow-model-optimization==0.8.1
    /tmp/tfmot_venv/bin/pip install dm-tree mock scipy ai-edge-litert

(`--no-deps` because tfmot 0.8.1 pins absl-py~=1.2, which would downgrade absl.) Run:

    nice -n 5 /tmp/tfmot_venv/bin/python benchmarks/bench_tfmot_twin.py [--quick] [--models residual,small]

Per model: train the float model, then apply tfmot's 50% magnitude pruning, 2:4 sparsity,
k-means weight clustering (8/16/32 clusters) and QAT, each fine-tuned and stripped; a
dense fine-tune with the same steps is the control. Each becomes a .tflite (fp32 and
full-int8 PTQ with int8 I/O; QAT converts to int8 directly). We measure test accuracy
through LiteRT on the 10,000 test images, raw and gzip-9 bytes, zeros and distinct values
in the stored kernels, and LiteRT latency (XNNPACK, 1 thread, batch 1) of all variants
of one model timed interleaved in one process, as ratios to that model's fp32 .tflite.

Writes benchmarks/results/tfmot_twin.{md,json}. Never run by the tests.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable

os.environ["TF_USE_LEGACY_KERAS"] = "1"  # before TensorFlow is imported: tf.keras is tf_keras
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

VENV_HINT = (
    "This benchmark needs tf_keras and tensorflow-model-optimization, which live in their own "
    "venv (they need the full `tensorflow` wheel, which conflicts with tensorflow-cpu). Create it "
    "as the docstring of benchmarks/bench_tfmot_twin.py says and run "
    "`/tmp/tfmot_venv/bin/python benchmarks/bench_tfmot_twin.py`."
)
try:
    import tensorflow as tf  # noqa: E402
    import tensorflow_model_optimization as tfmot  # noqa: E402
    import tf_keras as keras  # noqa: E402
    from ai_edge_litert.interpreter import Interpreter, OpResolverType  # noqa: E402
except ImportError as exc:  # pragma: no cover - depends on the environment
    sys.exit(f"bench_tfmot_twin: cannot import {exc.name!r}. {VENV_HINT}")
if not isinstance(tf.keras.Model, type) or not tf.keras.Model.__module__.startswith("tf_keras"):
    sys.exit(f"bench_tfmot_twin: tf.keras is not tf_keras (TF_USE_LEGACY_KERAS ignored?). {VENV_HINT}")

layers = keras.layers
ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path("/usr/share/datasets/fashion-mnist")
CALIBRATION_SAMPLES = 200
FINETUNE_BATCH = 64
FINETUNE_LR = 1e-4

# Training settings copied from our own benchmarks so the twins sit next to their numbers:
# residual_cnn(width=16) as in bench_cluster_sparsity.py (5 epochs on 60k images);
# small_cnn(width=32) as in bench_quantization.py (3 epochs on the first 30k, QAT 2 epochs);
# residual_cnn(width=32) as in bench_pruning.py (4 epochs on 60k images), pruning only.
ALL_PASSES = ("prune50", "sparse_2_4", "cluster", "qat")
MODELS: dict[str, dict[str, Any]] = {
    "residual": {"arch": "residual_cnn", "width": 16, "epochs": 5, "train_samples": 60000,
                 "finetune_steps": 300, "qat_epochs": 1, "qat_max_steps": 300, "passes": ALL_PASSES},
    "small": {"arch": "small_cnn", "width": 32, "epochs": 3, "train_samples": 30000,
              "finetune_steps": 300, "qat_epochs": 2, "qat_max_steps": None, "passes": ALL_PASSES},
    "residual32": {"arch": "residual_cnn", "width": 32, "epochs": 4, "train_samples": 60000,
                   "finetune_steps": 300, "qat_epochs": 0, "qat_max_steps": None, "passes": ("prune50",)},
}


def log(msg: str) -> None:
    """Print a timestamped progress line."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ----------------------------------------------------------------------------- data


def fashion_mnist() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Read Fashion-MNIST from the Debian package's idx files; images in [0, 1], NHWC."""

    def read(name: str, offset: int) -> np.ndarray:
        with gzip.open(DATA_DIR / name) as f:
            return np.frombuffer(f.read(), np.uint8, offset=offset)

    def images(name: str) -> np.ndarray:
        return (read(name, 16).reshape(-1, 28, 28, 1) / 255.0).astype(np.float32)

    names = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
             "t10k-labels-idx1-ubyte.gz")
    missing = [n for n in names if not (DATA_DIR / n).is_file()]
    if missing:
        sys.exit(f"Fashion-MNIST not found under {DATA_DIR}: apt-get install -y dataset-fashion-mnist")
    return (images("train-images-idx3-ubyte.gz"), read("train-labels-idx1-ubyte.gz", 8).astype(np.int64),
            images("t10k-images-idx3-ubyte.gz"), read("t10k-labels-idx1-ubyte.gz", 8).astype(np.int64))


# ----------------------------------------------------------------------------- twins


def small_cnn(width: int = 32, num_classes: int = 10) -> keras.Model:
    """tf_keras twin of kerascompress.examples.zoo.small_cnn: conv-BN-ReLU x3, two poolings, dense head."""
    inputs = keras.Input(shape=(28, 28, 1), name="image")
    x = layers.Conv2D(width, 3, padding="same", use_bias=False, name="conv1")(inputs)
    x = layers.BatchNormalization(name="bn1")(x)
    x = layers.ReLU(name="relu1")(x)
    x = layers.Conv2D(width * 2, 3, padding="same", use_bias=False, name="conv2")(x)
    x = layers.BatchNormalization(name="bn2")(x)
    x = layers.ReLU(name="relu2")(x)
    x = layers.MaxPooling2D(name="pool1")(x)
    x = layers.Conv2D(width * 2, 3, padding="same", use_bias=False, name="conv3")(x)
    x = layers.BatchNormalization(name="bn3")(x)
    x = layers.ReLU(name="relu3")(x)
    x = layers.MaxPooling2D(name="pool2")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(width * 2, activation="relu", name="fc1")(x)
    x = layers.Dropout(0.25, name="dropout")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name="small_cnn")


def residual_cnn(width: int = 32, num_classes: int = 10) -> keras.Model:
    """tf_keras twin of kerascompress.examples.zoo.residual_cnn: stem, three stages of two residual blocks, GAP."""
    inputs = keras.Input(shape=(28, 28, 1), name="image")
    x = layers.Conv2D(width, 3, padding="same", use_bias=False, name="stem_conv")(inputs)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.ReLU(name="stem_relu")(x)
    for stage, filters in enumerate((width, width * 2, width * 4)):
        for block in range(2):
            prefix = f"s{stage}b{block}"
            stride = 2 if (block == 0 and stage > 0) else 1
            shortcut = x
            y = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False, name=f"{prefix}_conv1")(x)
            y = layers.BatchNormalization(name=f"{prefix}_bn1")(y)
            y = layers.ReLU(name=f"{prefix}_relu1")(y)
            y = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{prefix}_conv2")(y)
            y = layers.BatchNormalization(name=f"{prefix}_bn2")(y)
            if stride != 1 or shortcut.shape[-1] != filters:
                shortcut = layers.Conv2D(filters, 1, strides=stride, use_bias=False, name=f"{prefix}_proj")(shortcut)
                shortcut = layers.BatchNormalization(name=f"{prefix}_proj_bn")(shortcut)
            x = layers.Add(name=f"{prefix}_add")([shortcut, y])
            x = layers.ReLU(name=f"{prefix}_out")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name="residual_cnn")


def compile_classifier(model: keras.Model, learning_rate: float) -> keras.Model:
    """Adam + sparse categorical cross-entropy, as kerascompress.examples.zoo.compile_classifier."""
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model


def copy_model(model: keras.Model) -> keras.Model:
    """A fresh copy of ``model`` with the same weights (the original stays untouched)."""
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


# ----------------------------------------------------------------------------- tfmot passes


def _is_weight_layer(layer: keras.layers.Layer) -> bool:
    return isinstance(layer, (layers.Conv2D, layers.Dense))


def _clone_wrapping(model: keras.Model, wrap: Callable[[keras.layers.Layer], keras.layers.Layer]) -> keras.Model:
    """Clone ``model`` (same weights) with ``wrap`` applied to every layer."""
    return keras.models.clone_model(copy_model(model), clone_function=wrap)


def apply_pruning(model: keras.Model, m_by_n: tuple[int, int] | None) -> tuple[keras.Model, list[str]]:
    """tfmot magnitude pruning to 50% (unstructured) or ``m_by_n`` (e.g. 2:4) on every Conv2D/Dense.

    The wrapper's step counter is already 1 at the first mask update, so ``begin_step=1`` (not 0)
    prunes at the first fine-tuning step and again every 100. 2:4 masks are set once, at step 1.
    2:4 needs the kernel's input axis to be a multiple of 4, so layers with fewer or odd input
    channels (the 1-channel stem) stay dense. Returns the wrapped model and the dense layers.
    """
    sparsity = tfmot.sparsity.keras
    schedule = sparsity.ConstantSparsity(0.5, begin_step=1, frequency=100)
    skipped: list[str] = []

    def wrap(layer):
        if not _is_weight_layer(layer):
            return layer
        if m_by_n is not None and layer.get_weights()[0].shape[-2] % m_by_n[1]:
            skipped.append(layer.name)
            return layer
        kw = {"sparsity_m_by_n": m_by_n} if m_by_n else {}
        return sparsity.prune_low_magnitude(layer, pruning_schedule=schedule, **kw)

    return _clone_wrapping(model, wrap), skipped


def apply_clustering(model: keras.Model, clusters: int) -> keras.Model:
    """tfmot k-means weight clustering (k-means++ init, per tensor) of every Conv2D/Dense kernel."""
    clustering = tfmot.clustering.keras
    init = clustering.CentroidInitialization.KMEANS_PLUS_PLUS
    return clustering.cluster_weights(copy_model(model), number_of_clusters=clusters, cluster_centroids_init=init)


def finetune(model: keras.Model, x: np.ndarray, y: np.ndarray, steps: int | None, epochs: int,
             callbacks: list | None = None, seed: int = 0) -> float:
    """Fine-tune with Adam(1e-4), batch 64, ``epochs`` over at most ``steps`` batches; returns seconds."""
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(x))
    if steps is not None:
        idx = idx[: steps * FINETUNE_BATCH]
    compile_classifier(model, FINETUNE_LR)
    start = time.time()
    model.fit(x[idx], y[idx], batch_size=FINETUNE_BATCH, epochs=epochs, verbose=0, callbacks=callbacks or [])
    return time.time() - start


def keras_accuracy(model: keras.Model, xt: np.ndarray, yt: np.ndarray) -> float:
    """Top-1 accuracy of a Keras model on the test images."""
    return float(np.mean(np.argmax(model.predict(xt, batch_size=256, verbose=0), -1) == yt))


# ----------------------------------------------------------------------------- TFLite


def to_tflite(model: keras.Model, int8: bool, calib: np.ndarray) -> bytes:
    """Convert to a .tflite: fp32, or full int8 (int8 input/output) calibrated on ``calib``."""
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    if int8:
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = lambda: ([calib[i: i + 1]] for i in range(len(calib)))
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
    return conv.convert()


def _quantize_input(x: np.ndarray, detail: dict) -> np.ndarray:
    if detail["dtype"] == np.float32:
        return x.astype(np.float32)
    scale, zero = detail["quantization"]
    return np.clip(np.round(x / scale + zero), -128, 127).astype(detail["dtype"])


def tflite_accuracy(data: bytes, x: np.ndarray, y: np.ndarray, batch: int = 250) -> float:
    """Top-1 accuracy of a .tflite through LiteRT (2 threads, batches of ``batch``)."""
    it = Interpreter(model_content=data, num_threads=2)
    inp = it.get_input_details()[0]
    it.resize_tensor_input(inp["index"], [batch, *inp["shape"][1:]])
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    correct = 0
    for start in range(0, len(x) - len(x) % batch, batch):
        it.set_tensor(inp["index"], _quantize_input(x[start: start + batch], inp))
        it.invoke()
        correct += int(np.sum(np.argmax(it.get_tensor(out["index"]), -1) == y[start: start + batch]))
    return correct / (len(x) - len(x) % batch)


def kernel_stats(data: bytes) -> dict[str, Any]:
    """Zeros and distinct stored values in the conv / fully-connected kernels of a .tflite."""
    it = Interpreter(model_content=data, experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    it.allocate_tensors()
    kernels = []
    for op in it._get_ops_details():  # noqa: SLF001 - no public API lists an op's constant inputs
        if op["op_name"] in ("CONV_2D", "FULLY_CONNECTED", "DEPTHWISE_CONV_2D") and len(op["inputs"]) > 1:
            try:
                kernels.append(np.array(it.get_tensor(int(op["inputs"][1]))))
            except ValueError:
                continue
    if not kernels:
        return {}
    sizes = [k.size for k in kernels]
    ok_24 = [_is_2_4(k) for k in kernels]
    return {
        "kernels": len(kernels),
        "zero_fraction": round(float(sum(int(np.sum(k == 0)) for k in kernels)) / sum(sizes), 4),
        "max_unique_per_kernel": int(max(np.unique(k).size for k in kernels)),
        "max_unique_per_channel": int(max(max(np.unique(c).size for c in k.reshape(k.shape[0], -1)) for k in kernels)),
        "kernels_2_4": int(sum(ok_24)),
    }


def _is_2_4(kernel: np.ndarray) -> bool:
    """True when every group of 4 along the input axis (last in TFLite) holds at most 2 non-zeros."""
    if kernel.shape[-1] % 4:
        return False
    groups = kernel.reshape(-1, 4)
    return bool(np.all(np.sum(groups != 0, axis=1) <= 2))


def interleaved_latency(blobs: dict[str, bytes], x: np.ndarray, rounds: int, warmup: int = 10) -> dict[str, dict]:
    """Median/p10/p90 ms per .tflite at 1 thread, batch 1; each round invokes every model once."""
    runners = {}
    for name, data in blobs.items():
        it = Interpreter(model_content=data, num_threads=1)
        it.allocate_tensors()
        inp = it.get_input_details()[0]
        it.set_tensor(inp["index"], _quantize_input(x[:1], inp))
        for _ in range(warmup):
            it.invoke()
        runners[name] = it
    times: dict[str, list[float]] = {n: [] for n in blobs}
    for _ in range(rounds):
        for name, it in runners.items():
            start = time.perf_counter()
            it.invoke()
            times[name].append((time.perf_counter() - start) * 1000.0)
    return {n: {"median_ms": float(np.median(v)), "p10_ms": float(np.percentile(v, 10)),
                "p90_ms": float(np.percentile(v, 90))} for n, v in times.items()}


# ----------------------------------------------------------------------------- one model


def run_model(key: str, cfg: dict[str, Any], data: tuple, args: argparse.Namespace) -> dict[str, Any]:
    """Train one twin, apply every tfmot pipeline, convert, measure; returns the result rows."""
    x_all, y_all, xt, yt = data
    x, y = x_all[: cfg["train_samples"]], y_all[: cfg["train_samples"]]
    calib = x[:CALIBRATION_SAMPLES]
    keras.utils.set_random_seed(0)
    build = residual_cnn if cfg["arch"] == "residual_cnn" else small_cnn
    model = compile_classifier(build(cfg["width"]), 1e-3)
    log(f"{key}: {cfg['arch']}(width={cfg['width']}) {model.count_params():,} parameters; "
        f"training {cfg['epochs']} epochs on {len(x)} images")
    start = time.time()
    model.fit(x, y, epochs=cfg["epochs"], batch_size=128, verbose=2)
    train_s = time.time() - start
    float_acc = keras_accuracy(model, xt, yt)
    log(f"{key}: float Keras accuracy {float_acc:.4f} ({train_s:.0f} s)")

    blobs: dict[str, bytes] = {"float32": to_tflite(model, False, calib), "int8": to_tflite(model, True, calib)}
    rows: dict[str, dict[str, Any]] = {"float32": {"keras_accuracy": float_acc}, "int8": {"keras_accuracy": float_acc}}
    steps = cfg["finetune_steps"]

    def record(name: str, stripped: keras.Model, seconds: float, fp32: bool, extra: dict | None = None) -> None:
        acc = keras_accuracy(stripped, xt, yt)
        row = {"keras_accuracy": acc, "finetune_seconds": round(seconds, 1), **(extra or {})}
        blobs[f"{name}+int8"] = to_tflite(stripped, True, calib)
        rows[f"{name}+int8"] = dict(row)
        if fp32:
            blobs[name] = to_tflite(stripped, False, calib)
            rows[name] = dict(row)
        log(f"{key}: {name}: Keras accuracy {acc:.4f} (fine-tune {seconds:.0f} s)")

    control = copy_model(model)
    record("dense_finetune", control, finetune(control, x, y, steps, 1), fp32=False)

    for name, m_by_n in (("prune50", None), ("sparse_2_4", (2, 4))):
        if name not in cfg["passes"]:
            continue
        wrapped, dense = apply_pruning(model, m_by_n)
        seconds = finetune(wrapped, x, y, steps, 1, callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
        record(name, tfmot.sparsity.keras.strip_pruning(wrapped), seconds, fp32=True,
               extra={"left_dense": dense} if m_by_n else None)

    for k in args.clusters if "cluster" in cfg["passes"] else ():
        wrapped = apply_clustering(model, k)
        seconds = finetune(wrapped, x, y, steps, 1)
        record(f"cluster{k}", tfmot.clustering.keras.strip_clustering(wrapped), seconds, fp32=(k == 16))

    if "qat" in cfg["passes"]:
        qat = tfmot.quantization.keras.quantize_model(copy_model(model))
        seconds = finetune(qat, x, y, cfg["qat_max_steps"], cfg["qat_epochs"])
        qat_acc = keras_accuracy(qat, xt, yt)
        blobs["qat_int8"] = to_tflite(qat, True, calib)
        rows["qat_int8"] = {"keras_accuracy": qat_acc, "finetune_seconds": round(seconds, 1)}
        log(f"{key}: qat: Keras (fake-quant) accuracy {qat_acc:.4f} (fine-tune {seconds:.0f} s)")

    for name, blob in blobs.items():
        rows[name].update({"tflite_accuracy": tflite_accuracy(blob, xt, yt), "bytes": len(blob),
                           "gzip_bytes": len(gzip.compress(blob, 9)), **kernel_stats(blob)})
    log(f"{key}: timing {len(blobs)} variants interleaved, {args.rounds} rounds, 1 thread, batch 1")
    timing = interleaved_latency(blobs, xt, args.rounds)
    base = timing["float32"]["median_ms"]
    for name, t in timing.items():
        rows[name].update({k: round(v, 4) for k, v in t.items()})
        rows[name]["latency_ratio_vs_fp32"] = round(t["median_ms"] / base, 3)
    for name in rows:
        rows[name]["bytes_ratio_vs_fp32"] = round(rows[name]["bytes"] / rows["float32"]["bytes"], 3)
        rows[name]["gzip_ratio_vs_fp32"] = round(rows[name]["gzip_bytes"] / rows["float32"]["gzip_bytes"], 3)
    return {"model": f"{cfg['arch']}(width={cfg['width']}) tf_keras twin", "parameters": int(model.count_params()),
            "settings": cfg, "train_seconds": round(train_s, 1), "rows": rows}


# ----------------------------------------------------------------------------- report


COLUMNS = ("variant | LiteRT acc | Keras acc | bytes | x fp32 | gzip-9 bytes | x fp32 | zeros | max unique/kernel "
           "| latency ms | x fp32")


def markdown(result: dict[str, Any]) -> str:
    """Render the results as the markdown report."""
    s = result["setup"]
    out = [
        "# tfmot on tf_keras twins of our Fashion-MNIST models",
        "",
        f"Run {result['date']} in a separate venv: tensorflow {s['versions']['tensorflow']}, tf_keras "
        f"{s['versions']['tf_keras']}, tensorflow-model-optimization {s['versions']['tfmot']}, ai-edge-litert "
        f"{s['versions']['ai_edge_litert']}; {s['host']['cpus']} shared cores, run with `nice -n 5`; total "
        f"{result['seconds']} s. Script: benchmarks/bench_tfmot_twin.py.",
        "",
        "Settings: float models trained with Adam 1e-3, batch 128 (epochs and training images per model below, "
        "copied from bench_cluster_sparsity.py, bench_quantization.py and bench_pruning.py). Every tfmot pass is applied to every "
        f"Conv2D/Dense, then fine-tuned 1 epoch of at most {s['finetune_steps_note']} steps (batch "
        f"{FINETUNE_BATCH}, Adam {FINETUNE_LR}) and stripped. Pruning: `prune_low_magnitude` with "
        "ConstantSparsity(0.5, begin_step 1, frequency 100); 2:4: the same with `sparsity_m_by_n=(2, 4)` (layers whose input "
        "channels are not a multiple of 4 stay dense); clustering: `cluster_weights`, k-means++ init, per tensor; "
        "QAT: `quantize_model` (default 8-bit scheme). `dense_finetune` is the control: the same fine-tuning "
        "with no constraint, so extra training is not credited to a pass. int8 = full-integer PTQ with int8 "
        f"input/output, {CALIBRATION_SAMPLES} calibration images; QAT converts to int8 directly. Accuracy is the "
        ".tflite's on all 10,000 test images (LiteRT). Latency: ai_edge_litert Interpreter (XNNPACK), 1 thread, "
        f"batch 1, all variants of one model interleaved round-robin, {s['rounds']} rounds after 10 warm-up "
        "invokes, median; ratios are against that model's fp32 .tflite from the same run. `zeros` and `max "
        "unique/kernel` are read from the conv/FC kernels stored in the .tflite (int8 codes for int8 models).",
        "",
    ]
    if s.get("quick"):
        out += ["**Quick run (`--quick`): fewer images, epochs and rounds; accuracies are not meaningful.**", ""]
    for key, res in result["models"].items():
        cfg = res["settings"]
        out += [f"## {res['model']}", "",
                f"{res['parameters']:,} parameters; {cfg['epochs']} epochs on {cfg['train_samples']:,} images "
                f"({res['train_seconds']:.0f} s); passes: {', '.join(cfg['passes'])}"
                + (f"; QAT fine-tune {cfg['qat_epochs']} epoch(s)"
                   + (f" of at most {cfg['qat_max_steps']} steps" if cfg["qat_max_steps"] else " over all training images")
                   if "qat" in cfg["passes"] else "") + ".", "",
                "| " + COLUMNS + " |", "|" + "---|" * len(COLUMNS.split("|"))]
        for name, r in res["rows"].items():
            out.append(
                f"| {name} | {r['tflite_accuracy']:.4f} | {r['keras_accuracy']:.4f} | {r['bytes']:,} | "
                f"{r['bytes_ratio_vs_fp32']:.3f} | {r['gzip_bytes']:,} | {r['gzip_ratio_vs_fp32']:.3f} | "
                f"{r.get('zero_fraction', 0):.2f} | {r.get('max_unique_per_kernel', '-')} | {r['median_ms']:.3f} | "
                f"{r['latency_ratio_vs_fp32']:.2f}x |")
        dense = res["rows"].get("sparse_2_4+int8", {}).get("left_dense")
        if dense:
            out += ["", f"2:4 left dense (input channels not a multiple of 4): {', '.join(dense)}."]
        out.append("")
    out += ["## Reading (written by hand after the run, stored in the .json)", "",
            result.get("reading", "(not written yet)"), ""]
    return "\n".join(out)


def main() -> None:
    """Parse arguments, run the chosen models, write the .json and .md."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="residual,small,residual32", help="comma-separated keys of MODELS")
    ap.add_argument("--clusters", default="8,16,32", help="cluster counts (16 also gets an fp32 .tflite)")
    ap.add_argument("--rounds", type=int, default=200, help="timed rounds (each invokes every variant once)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 3k images, 1 epoch, 20 steps, 20 rounds")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--report-only", action="store_true", help="rewrite the .md from the saved .json")
    args = ap.parse_args()
    args.clusters = [int(k) for k in args.clusters.split(",") if k]
    out = Path(args.out)
    if args.report_only:
        saved = json.loads((out / "tfmot_twin.json").read_text())
        (out / "tfmot_twin.md").write_text(markdown(saved))
        return

    t0 = time.time()
    data = fashion_mnist()
    chosen = {k: dict(MODELS[k]) for k in args.models.split(",") if k}
    if args.quick:
        args.rounds = 20
        for cfg in chosen.values():
            cfg.update(epochs=1, train_samples=3000, finetune_steps=20, qat_epochs=1, qat_max_steps=20)
    from importlib.metadata import version

    result: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "setup": {
            "quick": args.quick, "rounds": args.rounds, "clusters": args.clusters,
            "finetune_steps_note": "/".join(sorted({str(c["finetune_steps"]) for c in chosen.values()})),
            "finetune": {"batch_size": FINETUNE_BATCH, "learning_rate": FINETUNE_LR},
            "calibration_samples": CALIBRATION_SAMPLES,
            "versions": {"tensorflow": tf.__version__, "tf_keras": keras.__version__, "tfmot": tfmot.__version__,
                         "ai_edge_litert": version("ai-edge-litert"), "numpy": np.__version__},
            "host": {"machine": platform.machine(), "python": platform.python_version(), "cpus": os.cpu_count()},
        },
        "models": {},
    }
    for key, cfg in chosen.items():
        result["models"][key] = run_model(key, cfg, data, args)
    result["seconds"] = round(time.time() - t0)
    out.mkdir(parents=True, exist_ok=True)
    (out / "tfmot_twin.json").write_text(json.dumps(result, indent=2))
    (out / "tfmot_twin.md").write_text(markdown(result))
    log(f"wrote {out / 'tfmot_twin.md'} ({result['seconds']} s)")
    print(markdown(result))


if __name__ == "__main__":
    main()
