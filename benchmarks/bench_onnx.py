"""ONNX precision variants on onnxruntime (CPU): latency and fidelity against float32.

For the Fashion-MNIST demo CNN (trained, so accuracy means something) and one
keras.applications model (MobileNetV2, weights=None: fidelity only), each variant
(fp32, fp16, int8 Q/DQ, mixed int8/fp16) is exported by `kc.export.to_onnx`, checked
against Keras, and timed interleaved in one run. Writes benchmarks/results/onnx.{md,json}.

    python benchmarks/bench_onnx.py [--runs 200]
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import keras
import numpy as np

from kerascompress.examples import datasets
from kerascompress.examples.demo import trained_fashion_cnn
from kerascompress.export.onnx import to_onnx
from kerascompress.metrics.fidelity import compare_outputs
from kerascompress.quant.plan import PrecisionPlan
from kerascompress.runtime.onnx_runner import OnnxModel
from kerascompress.runtime.timing import compare_latency

RESULTS = Path(__file__).parent / "results"


def _mixed_plan(model: keras.Model) -> PrecisionPlan:
    """Convolutions int8, everything else with weights fp16: a typical TensorRT mix."""
    per_layer = []
    for layer in model.layers:
        if not layer.weights:
            continue
        kind = "int8" if isinstance(layer, keras.layers.Conv2D) else "fp16"
        per_layer.append((layer.name, kind))
    return PrecisionPlan("mixed", layer_precisions=tuple(per_layer))


def bench(name: str, model: keras.Model, x_calib, x_eval, y_eval, runs: int) -> dict:
    plans = {
        "fp32": PrecisionPlan(),
        "fp16": PrecisionPlan("fp16"),
        "int8": PrecisionPlan("int8"),
        "mixed": _mixed_plan(model),
    }
    reference = model.predict(x_eval, verbose=0, batch_size=64)
    rows, runners = {}, {}
    for label, plan in plans.items():
        start = time.monotonic()
        art = to_onnx(model, plan=plan, calibration_data=x_calib)
        runner = OnnxModel(art.model_bytes)
        fid = compare_outputs(reference, runner.predict(x_eval), labels=y_eval)
        runners[label] = runner
        rows[label] = {
            "bytes": art.size_bytes,
            "max_abs_error": fid.max_abs_error,
            "top1_agreement": fid.top1_agreement,
            "accuracy": fid.accuracy,
            "export_seconds": round(time.monotonic() - start, 1),
        }
    stats = compare_latency(runners, runs=runs, warmup=10, x=x_eval)
    for label, s in stats.items():
        rows[label]["median_ms"] = s.median_ms
        rows[label]["p90_ms"] = s.p90_ms
        rows[label]["latency_ratio_vs_fp32"] = s.median_ms / stats["fp32"].median_ms
    return {"model": name, "params": int(model.count_params()), "variants": rows}


def to_markdown(results: list[dict], meta: dict) -> str:
    lines = ["# ONNX precision variants on onnxruntime (CPU, 1 thread)", "",
             f"Run {meta['date']} on {meta['machine']}; {meta['runs']} interleaved runs per variant, batch 1.", ""]
    for r in results:
        lines += [f"## {r['model']} ({r['params']:,} parameters)", "",
                  "| variant | bytes | median ms | latency vs fp32 | max abs err | top-1 agree | accuracy |",
                  "|---|---|---|---|---|---|---|"]
        for label, v in r["variants"].items():
            acc = "-" if v["accuracy"] is None else f"{v['accuracy']:.4f}"
            lines.append(f"| {label} | {v['bytes']:,} | {v['median_ms']:.3f} | {v['latency_ratio_vs_fp32']:.2f}x | "
                         f"{v['max_abs_error']:.2e} | {v['top1_agreement']:.4f} | {acc} |")
        lines.append("")
    lines.append("MobileNetV2 has random weights (no pretrained weights offline) and default BatchNorm statistics, "
                 "so its outputs are nearly constant: its error and agreement columns say nothing, its size and speed "
                 "columns stand. On onnxruntime's CPU provider the Q/DQ graphs (written for TensorRT) are slower than "
                 "fp32: they are meant to be built into a TensorRT engine, not run as they are.")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--eval", type=int, default=2000, help="Fashion-MNIST test images used for fidelity")
    args = parser.parse_args()

    cnn = trained_fashion_cnn()
    x_train, _ = datasets.fashion_mnist("train", limit=512)
    x_test, y_test = datasets.fashion_mnist("test", limit=args.eval)
    results = [bench("Fashion-MNIST CNN (kerascompress.examples.zoo.small_cnn, trained 3 epochs)", cnn,
                     x_train[:256], x_test, y_test, args.runs)]

    keras.utils.set_random_seed(0)
    mnv2 = keras.applications.MobileNetV2(weights=None, input_shape=(160, 160, 3))
    rng = np.random.default_rng(0)
    x_img = rng.uniform(-1, 1, (64, 160, 160, 3)).astype(np.float32)
    results.append(bench("MobileNetV2 160x160 (weights=None)", mnv2, x_img[:32], x_img[32:], None, args.runs // 2))

    meta = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": f"{platform.machine()} {platform.processor()}",
            "runs": args.runs}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "onnx.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    (RESULTS / "onnx.md").write_text(to_markdown(results, meta))
    print(to_markdown(results, meta))


if __name__ == "__main__":
    main()
