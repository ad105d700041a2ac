"""Benchmark: weight clustering and 2:4 sparsity on the residual Fashion-MNIST CNN.

What it measures, for LiteRT on this CPU: accuracy on the 10k test set (run through the
.tflite), raw and gzip size, unique int8 values per kernel, and latency as a ratio to
the float32 model, all variants timed interleaved in one process (shared machines
drift +-30% between runs, so only same-run ratios mean anything).

Variants: float32; int8 alone; Cluster(8/16/32) + int8 (cluster-preserving fine-tuning);
Cluster(16, per_channel) + int8; Sparsity("2:4") + int8 (mask-preserving fine-tuning).

    nice python benchmarks/bench_cluster_sparsity.py [--epochs 3] [--width 16]

Writes benchmarks/results/cluster_sparsity.{md,json}. Never run by the tests.
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
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kerascompress.data.bundle import DataBundle  # noqa: E402
from kerascompress.examples import zoo  # noqa: E402
from kerascompress.export.tflite import to_tflite  # noqa: E402
from kerascompress.export.tflite_inspect import tflite_kernel_stats  # noqa: E402
from kerascompress.passes.base import ModelState, PassContext  # noqa: E402
from kerascompress.passes.cluster import Cluster  # noqa: E402
from kerascompress.passes.sparsity import Sparsity, satisfies_nm  # noqa: E402
from kerascompress.runtime.litert import LiteRTModel  # noqa: E402
from kerascompress.runtime.timing import compare_latency  # noqa: E402
from kerascompress.targets import load  # noqa: E402


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def fashion_mnist() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    try:
        from kerascompress.examples.datasets import fashion_mnist as load_fm

        x, y = load_fm("train")
        xt, yt = load_fm("test")
        return x, y, xt, yt
    except ImportError:  # pragma: no cover - older checkouts
        folder = Path("/usr/share/datasets/fashion-mnist")

        def read(name: str, offset: int) -> np.ndarray:
            with gzip.open(folder / name) as f:
                return np.frombuffer(f.read(), np.uint8, offset=offset)

        def images(name: str) -> np.ndarray:
            return (read(name, 16).reshape(-1, 28, 28, 1) / 255.0).astype(np.float32)

        return (images("train-images-idx3-ubyte.gz"), read("train-labels-idx1-ubyte.gz", 8).astype(np.int64),
                images("t10k-images-idx3-ubyte.gz"), read("t10k-labels-idx1-ubyte.gz", 8).astype(np.int64))


def tflite_accuracy(data: bytes, x: np.ndarray, y: np.ndarray) -> float:
    pred = LiteRTModel(data, num_threads=2).predict(x, batch_size=256)
    return float(np.mean(np.argmax(pred, -1) == y))


def kernel_summary(data: bytes) -> dict[str, Any]:
    stats = tflite_kernel_stats(data)
    return {
        "kernels": len(stats),
        "max_unique_per_kernel": max(s["unique_values"] for s in stats),
        "median_unique_per_kernel": float(np.median([s["unique_values"] for s in stats])),
        "max_unique_per_channel": max(s["max_unique_per_channel"] for s in stats),
        "zero_fraction": float(np.average([s["zero_fraction"] for s in stats],
                                          weights=[np.prod(s["shape"]) for s in stats])),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=3, help="training epochs of the float model")
    ap.add_argument("--width", type=int, default=16, help="residual_cnn width (16: ~175k parameters)")
    ap.add_argument("--finetune-epochs", type=int, default=1)
    ap.add_argument("--finetune-steps", type=int, default=300, help="max steps per fine-tuning epoch (batch 64)")
    ap.add_argument("--runs", type=int, default=200, help="timed rounds (each runs every variant once)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--report-only", action="store_true", help="rewrite the .md from the saved .json")
    args = ap.parse_args()
    if args.report_only:
        saved = json.loads((Path(args.out) / "cluster_sparsity.json").read_text())
        (Path(args.out) / "cluster_sparsity.md").write_text(_markdown(saved))
        print(_markdown(saved))
        return

    t0 = time.time()
    x, y, xt, yt = fashion_mnist()
    keras.utils.set_random_seed(0)
    model = zoo.compile_classifier(zoo.residual_cnn(width=args.width), 1e-3)
    log(f"residual_cnn width {args.width}: {model.count_params():,} parameters; training {args.epochs} epochs")
    model.fit(x, y, epochs=args.epochs, batch_size=128, verbose=2)
    keras_acc = float(model.evaluate(xt, yt, verbose=0)[1])
    log(f"float Keras accuracy {keras_acc:.4f}")

    target = load("x86-avx2")
    ctx = PassContext(target, DataBundle(x, y, xt, yt), progress=log, seed=0)
    calib = x[:200]
    common = dict(finetune_epochs=args.finetune_epochs, max_steps_per_epoch=args.finetune_steps, learning_rate=1e-4)
    passes = {
        "cluster8": Cluster(8, **common),
        "cluster16": Cluster(16, **common),
        "cluster32": Cluster(32, **common),
        "cluster16_per_channel": Cluster(16, per_channel=True, **common),
        "sparse_2_4": Sparsity("2:4", **common),
    }
    artifacts: dict[str, bytes] = {"float32": to_tflite(model, "float32"),
                                   "int8": to_tflite(model, "int8", representative_data=calib)}
    rows: dict[str, dict[str, Any]] = {
        "float32": {"keras_accuracy": keras_acc, "gate": "baseline"}, "int8": {"keras_accuracy": keras_acc, "gate": "baseline"},
    }
    # Control: the same fine-tuning steps without constraints, so accuracy gains from the
    # extra training are not credited to clustering or sparsity.
    from kerascompress.models.copy import copy_model
    from kerascompress.training.constrained import constrained_finetune

    control = copy_model(model)
    start = time.time()
    constrained_finetune(control, x, y, [], epochs=args.finetune_epochs, max_steps_per_epoch=args.finetune_steps,
                         learning_rate=1e-4, seed=0, progress=log)
    artifacts["dense_finetune+int8"] = to_tflite(control, "int8", representative_data=calib)
    rows["dense_finetune+int8"] = {
        "keras_accuracy": float(np.mean(np.argmax(control.predict(xt, batch_size=256, verbose=0), -1) == yt)),
        "pass_seconds": round(time.time() - start, 1), "gate": "control"}
    for name, p in passes.items():
        log(f"{name}: {p!r}")
        start = time.time()
        out = p.apply(ModelState(model), ctx)
        seconds = time.time() - start
        compressed = out.state.model
        acc = float(np.mean(np.argmax(compressed.predict(xt, batch_size=256, verbose=0), -1) == yt))
        artifacts[f"{name}+int8"] = to_tflite(compressed, "int8", representative_data=calib)
        row = {"keras_accuracy": acc, "pass_seconds": round(seconds, 1), "gate": p.gate(target, ModelState(model)).benefit}
        if name.startswith("sparse"):
            row["pattern_ok_keras"] = all(v.get("pattern_ok", True) for v in out.details["layers"].values())
            row["dense_kernels"] = [k for k, v in out.details["layers"].items() if not v["sparse"]]
        else:
            row["keras_max_unique_per_kernel"] = max(
                v["unique_values"] for v in out.details["layers"].values() if v.get("clustered"))
        rows[f"{name}+int8"] = row
        if name == "cluster16":
            artifacts["cluster16 (float32)"] = to_tflite(compressed, "float32")
            rows["cluster16 (float32)"] = dict(row)
        log(f"{name}: Keras accuracy {acc:.4f} ({seconds:.0f} s)")

    for name, data in artifacts.items():
        r = rows[name]
        r["tflite_accuracy"] = tflite_accuracy(data, xt, yt)
        r["bytes"] = len(data)
        r["gzip_bytes"] = len(gzip.compress(data, 9))
        r.update(kernel_summary(data))
        if name.startswith("sparse_2_4"):
            interp_ok = _tflite_24_ok(data)
            r["pattern_ok_tflite"] = interp_ok
    log(f"timing {len(artifacts)} variants interleaved, {args.runs} rounds, 1 thread")
    timing = compare_latency(artifacts, runs=args.runs, warmup=10, num_threads=1)
    base = timing["float32"].median_ms
    for name, st in timing.items():
        rows[name]["latency_median_ms"] = round(st.median_ms, 4)
        rows[name]["latency_ratio_vs_fp32"] = round(st.median_ms / base, 3)

    result = {
        "model": f"kerascompress.zoo.residual_cnn(width={args.width})",
        "parameters": int(model.count_params()),
        "epochs": args.epochs,
        "finetune": {"epochs": args.finetune_epochs, "max_steps_per_epoch": args.finetune_steps, "batch_size": 64,
                     "learning_rate": 1e-4},
        "host": {"machine": platform.machine(), "python": platform.python_version(), "cpus": os.cpu_count()},
        "seconds": round(time.time() - t0),
        "rows": rows,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "cluster_sparsity.json").write_text(json.dumps(result, indent=2))
    (out / "cluster_sparsity.md").write_text(_markdown(result))
    log(f"wrote {out / 'cluster_sparsity.md'}")
    print(_markdown(result))


def _tflite_24_ok(data: bytes) -> bool:
    """Every kernel stored half-zero in the .tflite satisfies 2:4 along its input axis (last in TFLite)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interp = Interpreter(model_content=data, experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interp.allocate_tensors()
    index = {d["name"]: d["index"] for d in interp.get_tensor_details()}
    ok = True
    for s in tflite_kernel_stats(data):
        if s["zero_fraction"] >= 0.5 and s["shape"][-1] % 4 == 0:
            ok &= satisfies_nm(interp.get_tensor(index[s["name"]]), 2, 4, axis=-1)
    return bool(ok)


def _markdown(r: dict[str, Any]) -> str:
    lines = [
        "# Clustering and 2:4 sparsity on the residual Fashion-MNIST CNN",
        "",
        f"Model: `{r['model']}`, {r['parameters']:,} parameters, trained {r['epochs']} epochs. Fine-tuning after "
        f"each pass: {r['finetune']['epochs']} epoch(s) of at most {r['finetune']['max_steps_per_epoch']} steps "
        f"(batch 64, Adam {r['finetune']['learning_rate']}), keeping centroids / masks exact. "
        f"Target profile x86-avx2 (LiteRT + XNNPACK), 1 thread, batch 1, all variants timed interleaved in one run. "
        f"Accuracy is the .tflite's on the 10,000 test images. `dense_finetune+int8` is the control: the same "
        f"fine-tuning steps with no constraint, so extra training is not credited to a pass. "
        f"Total run: {r['seconds']} s.",
        "",
        "| variant | gate | accuracy | bytes | gzip bytes | gzip vs int8 | max unique / kernel | max unique / channel | "
        "zeros | latency vs fp32 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    int8_gzip = r["rows"]["int8"]["gzip_bytes"]
    for name, row in r["rows"].items():
        lines.append(
            f"| {name} | {row.get('gate', '')} | {row['tflite_accuracy']:.4f} | {row['bytes']:,} | "
            f"{row['gzip_bytes']:,} | {row['gzip_bytes'] / int8_gzip:.2f}x | {row['max_unique_per_kernel']} | "
            f"{row['max_unique_per_channel']} | {row['zero_fraction']:.2f} | {row['latency_ratio_vs_fp32']:.2f}x |"
        )
    lines += [
        "",
        "Reading it: `max unique / kernel` counts distinct stored values in any one conv/dense weight tensor of the "
        ".tflite (int8 codes for int8 models); `/ channel` the most in any one output channel. The converter "
        "quantizes weights per output channel and folds BatchNorm into the kernels, so per-tensor clusters "
        "survive as at most k values per output channel, not per tensor. Raw size and latency are unchanged "
        "by clustering and sparsity on this CPU (LiteRT computes dense); only gzip shrinks.",
        "",
    ]
    for name, row in r["rows"].items():
        if "pattern_ok_tflite" in row:
            lines.append(f"- {name}: 2:4 pattern exact in Keras: {row['pattern_ok_keras']}, in the int8 .tflite "
                         f"(groups of 4 along the input axis): {row['pattern_ok_tflite']}; left dense: "
                         f"{', '.join(row['dense_kernels']) or 'none'}")
    lines += [
        "",
        "## tfmot on the tf_keras twin",
        "",
        "Not run here: tf-keras needs the full `tensorflow` wheel, which conflicts with the installed "
        "tensorflow-cpu. tfmot on tf_keras twins is measured by benchmarks/bench_tfmot_twin.py in a separate venv "
        "(benchmarks/results/tfmot_twin.md): there too clustering and 2:4 sparsity change gzip size, not raw size or "
        "latency. Run the legacy path (`kerascompress.legacy`) where tf_keras is installed to put both side by side.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
