"""Benchmark of structured channel pruning (not a test; heavy: run it with `nice`).

Part 1: a residual CNN trained on Fashion-MNIST is pruned until its MACs fall >= 2x,
then fine-tuned with distillation from the unpruned model. We report accuracy, params,
TFLite file size and LiteRT latency against the unpruned model timed interleaved in the
same process (fp32 and int8).
Part 2: ResNet50 and MobileNetV2 at 224x224 (random weights) pruned at 10%..70%: LiteRT
latency speedup divided by MAC reduction, plus the time and peak memory the analysis
and surgery take (measured in a fresh process each).

    nice python benchmarks/bench_pruning.py [--quick] [--part 1|2|all]

Results go to benchmarks/results/pruning.json and pruning.md.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"


# ----------------------------------------------------------------------------- helpers


def to_tflite(model, int8_data=None) -> bytes:
    import tensorflow as tf

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    if int8_data is not None:
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = lambda: ([int8_data[i : i + 1]] for i in range(min(200, len(int8_data))))
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    return conv.convert()


def interleaved_latency(blobs: dict[str, bytes], x: np.ndarray, reps: int, threads: int = 1) -> dict[str, float]:
    """Median ms per model, timing the models in turn so machine load hits all alike."""
    from ai_edge_litert.interpreter import Interpreter

    runners = {}
    for name, blob in blobs.items():
        it = Interpreter(model_content=blob, num_threads=threads)
        it.allocate_tensors()
        inp = it.get_input_details()[0]
        if inp["dtype"] == np.float32:
            data = x.astype(np.float32)
        else:
            scale, zero = inp["quantization"]
            data = np.clip(np.round(x / scale + zero), -128, 127).astype(inp["dtype"])
        it.set_tensor(inp["index"], data)
        it.invoke()  # warm-up
        runners[name] = it
    times = {n: [] for n in blobs}
    for _ in range(reps):
        for name, it in runners.items():
            t = time.perf_counter()
            it.invoke()
            times[name].append((time.perf_counter() - t) * 1000)
    return {n: float(np.median(v)) for n, v in times.items()}


def tflite_accuracy(blob: bytes, x: np.ndarray, y: np.ndarray) -> float:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=blob, num_threads=2)
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    correct = 0
    for i in range(len(x)):
        xi = x[i : i + 1]
        if inp["dtype"] != np.float32:
            s, z = inp["quantization"]
            xi = np.clip(np.round(xi / s + z), -128, 127).astype(inp["dtype"])
        it.set_tensor(inp["index"], xi)
        it.invoke()
        correct += int(np.argmax(it.get_tensor(out["index"])) == y[i])
    return correct / len(x)


# ----------------------------------------------------------------------------- part 1


def part_fashion(args) -> dict:
    import keras

    from kerascompress.data.bundle import make_bundle
    from kerascompress.examples import zoo
    from kerascompress.examples.datasets import fashion_mnist
    from kerascompress.graph.counting import count_model
    from kerascompress.passes.base import ModelState, PassContext
    from kerascompress.passes.pruning import ChannelPruning
    from kerascompress.targets.target import Target
    from kerascompress.training.finetune import finetune

    keras.utils.set_random_seed(0)
    x, y = fashion_mnist("train", limit=args.train_limit)
    xt, yt = fashion_mnist("test")
    base = zoo.compile_classifier(zoo.residual_cnn(width=32))
    t0 = time.time()
    base.fit(x, y, epochs=args.epochs, batch_size=128, verbose=2)
    train_s = time.time() - t0
    acc = lambda m: float(m.evaluate(xt, yt, verbose=0, batch_size=256)[1])  # noqa: E731
    acc_base = acc(base)

    data = make_bundle((x, y), eval_fraction=0.05)
    t0 = time.time()
    out = ChannelPruning(macs_target=args.macs_target, criterion=args.criterion).apply(
        ModelState(base), PassContext(Target("x86", channel_multiple=8), data=data, teacher=base)
    )
    prune_s = time.time() - t0
    pruned = out.state.model
    zoo.compile_classifier(pruned)
    acc_pruned = acc(pruned)
    t0 = time.time()
    tuned = finetune(pruned, (data.x_train, data.y_train), args.ft_epochs, teacher=base,
                     batch_size=128, learning_rate=1e-3, progress=True)
    ft_s = time.time() - t0
    zoo.compile_classifier(tuned)
    acc_tuned = acc(tuned)

    blobs = {
        "base_fp32": to_tflite(base),
        "pruned_fp32": to_tflite(tuned),
        "base_int8": to_tflite(base, x[:200]),
        "pruned_int8": to_tflite(tuned, x[:200]),
    }
    lat = interleaved_latency(blobs, xt[:1], reps=args.reps)
    n_acc = min(len(xt), args.tflite_eval)
    res = {
        "train_epochs": args.epochs, "train_seconds": round(train_s, 1),
        "finetune_epochs": args.ft_epochs, "finetune_seconds": round(ft_s, 1),
        "pruning_seconds": round(prune_s, 2),
        "accuracy_base": acc_base, "accuracy_pruned_no_finetune": acc_pruned, "accuracy_pruned_finetuned": acc_tuned,
        "accuracy_drop": round(acc_base - acc_tuned, 4),
        "params_base": int(base.count_params()), "params_pruned": int(tuned.count_params()),
        "macs_base": int(count_model(base).macs), "macs_pruned": int(count_model(tuned).macs),
        "bytes": {k: len(v) for k, v in blobs.items()},
        "latency_ms_median": lat,
        "latency_ratio_fp32": round(lat["pruned_fp32"] / lat["base_fp32"], 3),
        "latency_ratio_int8_vs_base_int8": round(lat["pruned_int8"] / lat["base_int8"], 3),
        "latency_ratio_int8_vs_base_fp32": round(lat["pruned_int8"] / lat["base_fp32"], 3),
        "accuracy_int8": {k: tflite_accuracy(blobs[k], xt[:n_acc], yt[:n_acc]) for k in ("base_int8", "pruned_int8")},
        "groups": out.details["groups"],
        "tfmot_side_by_side": tfmot_side_by_side(),
    }
    return res


def tfmot_side_by_side() -> str:
    try:
        import tensorflow_model_optimization  # noqa: F401
    except Exception as exc:  # noqa: BLE001
        return f"not run: tensorflow-model-optimization is not installed here ({type(exc).__name__})"
    return "not run: needs a tf_keras twin in a separate process (TF_USE_LEGACY_KERAS=1); see benchmarks/results/tfmot_twin.md"


# ----------------------------------------------------------------------------- part 2


def _build(arch: str, size: int):
    import keras

    if arch == "resnet50":
        return keras.applications.ResNet50(input_shape=(size, size, 3), weights=None)
    return keras.applications.MobileNetV2(input_shape=(size, size, 3), weights=None)


def prune_once(arch: str, size: int, ratio: float, out_path: str) -> None:
    """Child process: build, prune, save; report seconds and peak RSS."""
    from kerascompress.passes.base import ModelState, PassContext
    from kerascompress.passes.pruning import ChannelPruning
    from kerascompress.targets.target import Target

    model = _build(arch, size)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    out = ChannelPruning(ratio, min_channels=8).apply(
        ModelState(model), PassContext(Target("x86", channel_multiple=8), progress=lambda _m: None)
    )
    seconds = time.perf_counter() - t
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out.state.model.save(out_path)
    print(json.dumps({"seconds": seconds, "peak_rss_mb": rss1 / 1024, "rss_before_mb": rss0 / 1024,
                      "macs_before": out.details["macs_before"], "macs_after": out.details["macs_after"],
                      "params_after": out.details["params_after"]}))


def part_imagenet(args) -> dict:
    import tempfile

    import keras

    results = {}
    for arch in args.archs:
        base = _build(arch, args.size)
        blobs = {"base": to_tflite(base)}
        rows = []
        with tempfile.TemporaryDirectory() as tmp:
            for ratio in args.ratios:
                path = os.path.join(tmp, f"{arch}_{ratio}.keras")
                cmd = [sys.executable, __file__, "--prune-once", arch, str(args.size), str(ratio), path]
                proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
                stats = json.loads(proc.stdout.strip().splitlines()[-1])
                blobs[f"r{ratio}"] = to_tflite(keras.models.load_model(path))
                rows.append({"ratio": ratio, **stats})
        x = np.random.default_rng(0).random((1, args.size, args.size, 3), dtype=np.float32)
        lat = interleaved_latency(blobs, x, reps=args.big_reps)
        for row in rows:
            speed = lat["base"] / lat[f"r{row['ratio']}"]
            mac_red = row["macs_before"] / row["macs_after"]
            row.update({"latency_ms": lat[f"r{row['ratio']}"], "speedup": round(speed, 3),
                        "mac_reduction": round(mac_red, 3), "speedup_over_mac_reduction": round(speed / mac_red, 3),
                        "tflite_bytes": len(blobs[f"r{row['ratio']}"])})
        results[arch] = {"base_latency_ms": lat["base"], "base_bytes": len(blobs["base"]), "rows": rows}
    return results


# ----------------------------------------------------------------------------- report


def write_markdown(res: dict, path: Path) -> None:
    lines = ["# Channel pruning benchmark", "", f"Machine: {os.cpu_count()} cores; LiteRT 1 thread, interleaved timing, medians.", ""]
    f = res.get("fashion")
    if f:
        lines += [
            "## Residual CNN on Fashion-MNIST", "",
            f"- accuracy: base {f['accuracy_base']:.4f}, pruned (no fine-tune) {f['accuracy_pruned_no_finetune']:.4f}, "
            f"pruned + {f['finetune_epochs']} epochs distillation {f['accuracy_pruned_finetuned']:.4f} "
            f"(drop {f['accuracy_drop']:+.4f})",
            f"- MACs {f['macs_base']:,} -> {f['macs_pruned']:,} ({f['macs_base'] / f['macs_pruned']:.2f}x); "
            f"params {f['params_base']:,} -> {f['params_pruned']:,}",
            f"- TFLite bytes: {f['bytes']}",
            f"- latency ms: {f['latency_ms_median']}",
            f"- latency ratio pruned/base fp32 {f['latency_ratio_fp32']}; int8 pruned/int8 base "
            f"{f['latency_ratio_int8_vs_base_int8']}; int8 pruned/fp32 base {f['latency_ratio_int8_vs_base_fp32']}",
            f"- int8 accuracy: {f['accuracy_int8']}",
            f"- pruning {f['pruning_seconds']} s, fine-tuning {f['finetune_seconds']} s",
            f"- tfmot side by side: {f['tfmot_side_by_side']}", "",
        ]
    for arch, r in res.get("imagenet", {}).items():
        lines += [f"## {arch} 224x224 (random weights)", "",
                  f"base: {r['base_latency_ms']:.1f} ms, {r['base_bytes']:,} bytes", "",
                  "| ratio | MAC reduction | speedup | speedup / MAC red. | prune s | peak RSS MB | bytes |",
                  "|---|---|---|---|---|---|---|"]
        for row in r["rows"]:
            lines.append(f"| {row['ratio']} | {row['mac_reduction']} | {row['speedup']} | "
                         f"{row['speedup_over_mac_reduction']} | {row['seconds']:.1f} | {row['peak_rss_mb']:.0f} | "
                         f"{row['tflite_bytes']:,} |")
        lines.append("")
    path.write_text("\n".join(lines))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--prune-once":
        prune_once(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), sys.argv[5])
        return
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--part", choices=["1", "2", "all"], default="all")
    p.add_argument("--quick", action="store_true", help="fewer epochs, ratios and repetitions")
    p.add_argument("--criterion", default="l1")
    p.add_argument("--macs-target", type=float, default=0.45)
    p.add_argument("--archs", default="mobilenetv2,resnet50")
    p.add_argument("--big-reps", type=int, default=None)
    args = p.parse_args()
    args.epochs, args.ft_epochs = (1, 1) if args.quick else (4, 3)
    args.train_limit = 20000 if args.quick else None
    args.reps = 50 if args.quick else 200
    args.tflite_eval = 1000 if args.quick else 10000
    archs = args.archs.split(",")
    args.size = 224
    args.ratios = [0.3, 0.5] if args.quick else [0.1, 0.3, 0.5, 0.7]
    args.big_reps = args.big_reps or (5 if args.quick else 15)
    args.archs = archs
    RESULTS.mkdir(parents=True, exist_ok=True)
    out_json = RESULTS / "pruning.json"
    res = json.loads(out_json.read_text()) if out_json.exists() else {}
    if args.part in ("1", "all"):
        res["fashion"] = part_fashion(args)
        out_json.write_text(json.dumps(res, indent=1))
    if args.part in ("2", "all"):
        res.setdefault("imagenet", {}).update(part_imagenet(args))
    out_json.write_text(json.dumps(res, indent=1))
    write_markdown(res, RESULTS / "pruning.md")
    print((RESULTS / "pruning.md").read_text())


if __name__ == "__main__":
    main()
