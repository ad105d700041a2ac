"""What LiteRT's CPU runtime does with each kind of .tflite, measured on this machine.

The target profiles' LiteRT facts that no vendor document states are measured here:
whether the default XNNPACK delegate takes the model (a DELEGATE node in the execution
plan), what the converter writes as ``reduced_precision_support``, and the latency of
one small CNN as float32, FP16 weights (with and without the FP16-accumulation request),
int8, 16x8, and int8 after 2:4 sparsity or clustering of the weights, plus the
converter's EXPERIMENTAL_SPARSITY encoding. All variants are timed interleaved in one
process (1 thread, batch 1), so their ratios hold on a shared machine.

    python benchmarks/bench_litert_kernels.py [--rounds 200]

Writes benchmarks/results/litert_kernels.json and .md, naming the machine.
"""
from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from kerascompress.export.tflite_graph import read_graph, reduced_precision_support  # noqa: E402
from kerascompress.runtime.timing import compare_latency  # noqa: E402
from kerascompress.targets.cpuinfo import KERNEL_FEATURES, X86_FEATURES, ARM_FEATURES, host_cpu  # noqa: E402


def build_model():
    """A small conv/depthwise CNN on 64x64x16 inputs: enough work for kernels to matter."""
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((64, 64, 16))
    x = inp
    for c in (32, 64, 64):
        x = keras.layers.Conv2D(c, 3, padding="same", activation="relu")(x)
        x = keras.layers.DepthwiseConv2D(3, padding="same", activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, keras.layers.Dense(10)(x))


def sparse_2_4(model):
    """A copy whose Conv2D/Dense kernels keep the 2 largest of every 4 input weights."""
    import keras

    out = keras.models.clone_model(model)
    out.set_weights(model.get_weights())
    for layer in out.layers:
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)) and not isinstance(layer, keras.layers.DepthwiseConv2D):
            w = layer.kernel.numpy()
            cin = w.shape[-2]
            if cin % 4:
                continue
            groups = np.moveaxis(w, -2, -1).reshape(-1, 4)
            keep = np.argsort(-np.abs(groups), axis=1)[:, :2]
            mask = np.zeros_like(groups)
            np.put_along_axis(mask, keep, 1.0, axis=1)
            w = np.moveaxis((groups * mask).reshape(np.moveaxis(w, -2, -1).shape), -1, -2)
            layer.kernel.assign(w)
    return out


def clustered(model, k=16):
    """A copy whose Conv2D/Dense kernels hold k distinct values each (uniform levels)."""
    import keras

    out = keras.models.clone_model(model)
    out.set_weights(model.get_weights())
    for layer in out.layers:
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
            w = layer.kernel.numpy()
            levels = np.linspace(w.min(), w.max(), k)
            layer.kernel.assign(levels[np.abs(w[..., None] - levels).argmin(-1)].astype(w.dtype))
    return out


def convert(model, kind, calib):
    import tensorflow as tf

    c = tf.lite.TFLiteConverter.from_keras_model(model)
    if kind in ("fp16", "fp16_accumulation"):
        c.optimizations = [tf.lite.Optimize.DEFAULT]
        c.target_spec.supported_types = [tf.float16]
        if kind == "fp16_accumulation":
            c.target_spec._experimental_supported_accumulation_type = tf.dtypes.float16
    elif kind in ("int8", "int16x8"):
        c.optimizations = [tf.lite.Optimize.DEFAULT]
        c.representative_dataset = lambda: ([x[None]] for x in calib)
        if kind == "int16x8":
            c.target_spec.supported_ops = [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
        else:
            c.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    elif kind == "experimental_sparsity":
        c.optimizations = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return bytes(c.convert())


def delegated(model_bytes):
    """Whether the default (AUTO) op resolver hands ops to XNNPACK: a DELEGATE node in the plan."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=model_bytes, num_threads=1)
    interp.allocate_tensors()
    return any(op["op_name"] == "DELEGATE" for op in interp._get_ops_details())


def machine():
    cpu = host_cpu()
    known = X86_FEATURES if cpu.arch == "x86_64" else ARM_FEATURES
    versions = {}
    for dist in ("tensorflow-cpu", "tensorflow", "ai-edge-litert", "keras"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    return {
        "cpu_model": cpu.model,
        "arch": cpu.arch,
        "cores": os.cpu_count(),
        "isa_features": sorted(f for f in cpu.flags if f in known),
        "kernel_features": sorted(cpu.kernel_features()),
        "kernel_features_checked": list(KERNEL_FEATURES.get(cpu.arch, ())),
        "load_average_at_start": list(os.getloadavg()),
        "python": platform.python_version(),
        "versions": versions,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--out", default=str(HERE / "results" / "litert_kernels"))
    args = ap.parse_args()
    started = time.time()
    info = machine()
    model = build_model()
    calib = np.random.default_rng(0).random((32, 64, 64, 16), dtype=np.float32)
    variants = {
        "float32": (model, "float32"),
        "fp16": (model, "fp16"),
        "fp16_accumulation": (model, "fp16_accumulation"),
        "int8": (model, "int8"),
        "int16x8": (model, "int16x8"),
        "sparse_2_4+int8": (sparse_2_4(model), "int8"),
        "cluster16+int8": (clustered(model), "int8"),
        "sparse_2_4+experimental_sparsity": (sparse_2_4(model), "experimental_sparsity"),
        "sparse_2_4 (float32)": (sparse_2_4(model), "float32"),
    }
    files = {name: convert(m, kind, calib) for name, (m, kind) in variants.items()}
    stats = compare_latency(files, runs=args.rounds, warmup=10)
    base = stats["float32"].median_ms
    rows = {}
    for name, data in files.items():
        graph = read_graph(data)
        rows[name] = {
            "bytes": len(data),
            "xnnpack_delegated": delegated(data),
            "reduced_precision_support": reduced_precision_support(data),
            "densify_ops": graph.op_names().count("DENSIFY"),
            "median_ms": round(stats[name].median_ms, 4),
            "p90_ms": round(stats[name].p90_ms, 4),
            "x_float32": round(stats[name].median_ms / base, 3),
        }
    result = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "machine": info,
        "timing": f"ai_edge_litert Interpreter, default op resolver, 1 thread, batch 1, {args.rounds} interleaved rounds after 10 warm-up",
        "model": "Conv2D(32/64/64, 3x3) + DepthwiseConv2D(3x3) x3 on 64x64x16, GlobalAveragePooling2D, Dense(10)",
        "seconds": round(time.time() - started, 1),
        "variants": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))


def markdown(r) -> str:
    m = r["machine"]
    lines = [
        "# LiteRT CPU kernels: what XNNPACK takes and what it speeds up",
        "",
        f"Machine: {m['cpu_model']} ({m['arch']}, {m['cores']} shared cores, load average {m['load_average_at_start'][0]:.1f} "
        f"at start); ISA features: {', '.join(m['isa_features'])}; kernel-deciding features: "
        f"{', '.join(m['kernel_features']) or 'none'} (of {', '.join(m['kernel_features_checked'])}). "
        f"Software: {', '.join(f'{k} {v}' for k, v in m['versions'].items())}, Python {m['python']}. "
        f"Run {r['date_utc']} UTC, {r['seconds']} s. Script: benchmarks/bench_litert_kernels.py.",
        "",
        f"Model: {r['model']}. Timing: {r['timing']}; `x float32` is the ratio of medians from the same run.",
        "",
        "| variant | bytes | XNNPACK delegate | reduced_precision_support | DENSIFY ops | median ms | p90 ms | x float32 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, v in r["variants"].items():
        lines.append(
            f"| {name} | {v['bytes']:,} | {'yes' if v['xnnpack_delegated'] else 'no'} | {v['reduced_precision_support'] or '-'} "
            f"| {v['densify_ops']} | {v['median_ms']:.3f} | {v['p90_ms']:.3f} | {v['x_float32']:.2f}x |"
        )
    lines += [
        "",
        "Reading it: `XNNPACK delegate` = the execution plan of the default interpreter ends in a DELEGATE node "
        "(XNNPACK took the graph); `no` means LiteRT's built-in kernels run it. `reduced_precision_support` is the "
        "metadata the converter wrote: XNNPACK computes in FP16 only on Arm cores with FP16 arithmetic and only "
        "when it says `fp16accfp16` (XNNPACK delegate README, 'Floating-Point (IEEE FP16) Operators', "
        "https://github.com/google-ai-edge/LiteRT/blob/main/tflite/delegates/xnnpack/README.md); this x86 machine "
        "has no FP16 arithmetic path, so both FP16 files run in FP32 here. Sparsity and clustering change the "
        "values, not the dense int8 layout, so their int8 files run as fast as plain int8 and no faster.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
