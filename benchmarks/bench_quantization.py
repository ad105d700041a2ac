"""Benchmark of precision choices on Fashion-MNIST (not a test; run it with `nice`).

Two models, five variants each, side by side: float32, FP16, full INT8 (post-training,
min/max calibration), mixed (INT8 with the fewest sensitive layers kept in FP32 until
the accuracy budget holds) and QAT (fake-quant fine-tuning, then INT8). Accuracy on the
test split, TFLite size, and LiteRT latency (1 thread, batch 1) as a ratio to float32,
all variants of a model timed interleaved in one run.

Model A: `kerascompress.zoo.small_cnn` trained on Fashion-MNIST.
Model B ("unbalanced"): model A with one live output channel of bn1 made 300x larger and
the matching input weights of conv2 300x smaller. ReLU commutes with positive scaling,
so the float model computes exactly the same function, but conv1's per-tensor int8
activation range is now set by one channel and the other channels lose their
resolution: the unbalanced-channel-range failure real networks show (the reason
cross-layer equalization exists). Plain INT8 PTQ loses well over a point on it.

tfmot's QAT on the tf_keras twin is not run: tfmot needs tf_keras, which needs the full
`tensorflow` wheel and conflicts with the tensorflow-cpu installed here; benchmarks/bench_tfmot_twin.py
runs it in a separate venv (benchmarks/results/tfmot_twin.md).

    nice python benchmarks/bench_quantization.py [--quick]

Results go to benchmarks/results/quantization.json and quantization.md.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"

import numpy as np  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer samples and epochs (smoke run)")
    ap.add_argument("--budget", type=float, default=0.01, help="accuracy budget for mixed precision")
    args = ap.parse_args()

    import keras

    from kerascompress import targets
    from kerascompress.data.bundle import DataBundle
    from kerascompress.examples import datasets, zoo
    from kerascompress.export.tflite import to_tflite
    from kerascompress.passes.base import ModelState
    from kerascompress.pipeline.measure import pass_context
    from kerascompress.quant.mixed import search_mixed_plan
    from kerascompress.passes.qat import QuantizationAwareTraining
    from kerascompress.quant.fake_quant import unbalance_channel
    from kerascompress.runtime.litert import LiteRTModel
    from kerascompress.runtime.timing import compare_latency

    n_train, n_test, epochs = (6000, 1000, 1) if args.quick else (30000, 5000, 3)
    x, y = datasets.fashion_mnist("train", limit=n_train)
    xt, yt = datasets.fashion_mnist("test", limit=n_test)
    calib, x_search, y_search = x[:256], x[-1000:], y[-1000:]
    target = targets.load("x86-avx512-vnni")
    keras.utils.set_random_seed(0)

    t0 = time.time()
    base = zoo.compile_classifier(zoo.small_cnn())
    base.fit(x, y, epochs=epochs, batch_size=128, verbose=0)
    train_s = time.time() - t0
    probe = keras.Model(base.inputs, base.get_layer("relu1").output).predict(x[:256], verbose=0)
    channel = int(np.argmax(probe.reshape(-1, probe.shape[-1]).mean(0)))
    models = {"small_cnn": base, "unbalanced_small_cnn": unbalance_channel(base, "bn1", "conv2", channel, 300.0)}

    results: dict = {"setup": {"train_samples": n_train, "test_samples": n_test, "epochs": epochs,
                               "train_seconds": round(train_s, 1), "budget_points": args.budget * 100,
                               "target": target.name, "unbalanced_channel": channel,
                               "latency": "LiteRT, XNNPACK, 1 thread, batch 1, interleaved, median"},
                     "models": {}}
    for name, model in models.items():
        print(f"== {name}", flush=True)
        row: dict = {}
        arts: dict[str, bytes] = {}
        arts["float32"] = to_tflite(model, "float32")
        arts["fp16"] = to_tflite(model, "fp16")
        arts["int8"] = to_tflite(model, "int8", representative_data=calib, num_samples=256)
        t = time.time()
        mixed = search_mixed_plan(model, target, calib, x_search, y_search, max_drop=args.budget,
                                  progress=lambda m: print("  ", m, flush=True),
                                  build=lambda plan: LiteRTModel(to_tflite(model, plan, representative_data=calib)))
        arts["mixed"] = to_tflite(model, mixed.plan, representative_data=calib, num_samples=256)
        row["mixed_plan"] = {"kept_fp32": mixed.high_precision_layers, "search_seconds": round(time.time() - t, 1),
                             "candidates": len(mixed.evaluations),
                             "sensitivity": [(s.layer, round(s.error, 5)) for s in mixed.sensitivity]}
        t = time.time()
        bundle = DataBundle(x, y, xt, yt, calibration_samples=256)
        ctx = pass_context(target, bundle, teacher=model, progress=lambda m: None)
        qat = QuantizationAwareTraining(epochs=1 if args.quick else 2).apply(ModelState(model), ctx)
        arts["qat"] = to_tflite(qat.state.model, qat.state.precision, representative_data=calib, num_samples=256)
        qat_ref = qat.state.model.predict(xt, verbose=0)
        row["qat_seconds"] = round(time.time() - t, 1)
        float_acc = float(np.mean(model.predict(xt, verbose=0).argmax(-1) == yt))
        row["keras_float_accuracy"] = float_acc
        variants = {}
        for k, data in arts.items():
            out = LiteRTModel(data).predict(xt)
            variants[k] = {"accuracy": float(np.mean(out.argmax(-1) == yt)), "size_bytes": len(data)}
            if k == "qat":
                variants[k]["agreement_with_qat_keras"] = float(np.mean(out.argmax(-1) == qat_ref.argmax(-1)))
        lat = compare_latency(arts, runs=30 if args.quick else 300, warmup=20)
        for k in arts:
            variants[k]["latency_ms"] = round(lat[k].median_ms, 4)
            variants[k]["latency_ratio"] = round(lat[k].median_ms / lat["float32"].median_ms, 3)
            variants[k]["points_vs_float32"] = round((variants[k]["accuracy"] - variants["float32"]["accuracy"]) * 100, 2)
        row["variants"] = variants
        results["models"][name] = row
        for k, v in variants.items():
            print(f"  {k:8s} acc {v['accuracy']:.4f} ({v['points_vs_float32']:+.2f}) size {v['size_bytes']:>8d} "
                  f"latency x{v['latency_ratio']:.3f}", flush=True)

    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "quantization.json").write_text(json.dumps(results, indent=2))
    lines = ["# Quantization benchmark (Fashion-MNIST)", "",
             f"Setup: {json.dumps(results['setup'])}", "",
             "tfmot QAT on the tf_keras twin: not run - tf_keras needs the full `tensorflow` wheel, which "
             "conflicts with tensorflow-cpu here; benchmarks/bench_tfmot_twin.py runs it in a separate venv "
             "(benchmarks/results/tfmot_twin.md).", ""]
    for name, row in results["models"].items():
        lines += [f"## {name}", "", f"Mixed plan keeps in fp32: {row['mixed_plan']['kept_fp32']} "
                  f"({row['mixed_plan']['candidates']} candidates, {row['mixed_plan']['search_seconds']} s); "
                  f"QAT {row['qat_seconds']} s", "",
                  "| variant | accuracy | vs float32 (points) | size (bytes) | latency (ms) | latency / float32 |",
                  "|---|---|---|---|---|---|"]
        for k, v in row["variants"].items():
            lines.append(f"| {k} | {v['accuracy']:.4f} | {v['points_vs_float32']:+.2f} | {v['size_bytes']:,} | "
                         f"{v['latency_ms']:.3f} | {v['latency_ratio']:.3f} |")
        if "agreement_with_qat_keras" in row["variants"]["qat"]:
            lines += ["", f"QAT int8 TFLite top-1 agreement with the QAT Keras model: "
                          f"{row['variants']['qat']['agreement_with_qat_keras']:.4f}"]
        lines.append("")
    (RESULTS / "quantization.md").write_text("\n".join(lines))
    print("written", RESULTS / "quantization.md")


if __name__ == "__main__":
    main()
