"""TFLite Micro's real arena against kerascompress's plan of it, for a few small int8 models.

`kerascompress.export.tflite_memory.plan_arena` reproduces the arena head (activations)
TFLM's greedy planner lays out. This runs each model in the TFLM Python interpreter
(PyPI package tflite-micro, host build with reference kernels) and records what its
RecordingMicroAllocator reports: head, tail (persistent data) and total, next to the plan.

    python benchmarks/bench_tflm_arena.py

Writes benchmarks/results/tflm_arena.json and .md, naming the machine.
"""
from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import platform
import re
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from kerascompress.export.tflite import to_tflite  # noqa: E402
from kerascompress.export.tflite_graph import read_graph  # noqa: E402
from kerascompress.export.tflite_memory import plan_arena  # noqa: E402
from kerascompress.targets.cpuinfo import host_cpu  # noqa: E402


def models():
    import keras
    from keras import layers as L

    def cnn():
        i = keras.Input((32, 32, 3))
        x = L.Conv2D(16, 3, padding="same", activation="relu")(i)
        x = L.DepthwiseConv2D(3, padding="same", activation="relu")(x)
        x = L.Conv2D(32, 1, activation="relu")(x)
        x = L.MaxPooling2D()(x)
        x = L.Conv2D(32, 3, padding="same", activation="relu")(x)
        return keras.Model(i, L.Dense(10)(L.GlobalAveragePooling2D()(x)))

    def residual_concat():
        i = keras.Input((16, 16, 8))
        x = L.Add()([L.Conv2D(8, 3, padding="same", activation="relu")(i), L.Conv2D(8, 1)(i)])
        x = L.Concatenate()([x, L.Conv2D(4, 3, padding="same")(x)])
        return keras.Model(i, L.Dense(5)(L.Flatten()(L.AveragePooling2D(2)(x))))

    def mlp():
        i = keras.Input((40,))
        return keras.Model(i, L.Dense(10)(L.Dense(30, activation="relu")(L.Dense(64, activation="relu")(i))))

    for build in (cnn, residual_concat, mlp):
        keras.utils.set_random_seed(0)
        yield build.__name__, build()


def tflm_allocations(data: bytes) -> dict:
    """What TFLM's RecordingMicroAllocator prints (to stderr) after allocating ``data``."""
    from tflite_micro.python.tflite_micro import runtime

    fd = sys.stderr.fileno()
    saved = os.dup(fd)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), fd)
        try:
            runtime.Interpreter.from_bytes(data, arena_size=1 << 22).print_allocations()
        finally:
            sys.stderr.flush()
            os.dup2(saved, fd)
        capture.seek(0)
        text = capture.read().decode()
    return {k: int(re.search(rf"Arena allocation {k} (\d+) bytes", text).group(1)) for k in ("head", "tail", "total")}


def main() -> None:
    cpu = host_cpu()
    rows = {}
    for name, model in models():
        x = np.random.default_rng(0).random((16, *model.inputs[0].shape[1:]), dtype=np.float32)
        data = to_tflite(model, "int8", representative_data=x, int8_io=True)
        plan = plan_arena(data)
        real = tflm_allocations(data)
        rows[name] = {
            "model_bytes": len(data),
            "operators": len(read_graph(data).operators),
            "planned_head_bytes": plan.head_bytes,
            "peak_live_bytes": plan.peak_live_bytes,
            "tflm_head_bytes": real["head"],
            "tflm_tail_bytes": real["tail"],
            "tflm_total_bytes": real["total"],
        }
    result = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "machine": {"cpu_model": cpu.model, "arch": cpu.arch, "python": platform.python_version(),
                    "tflite_micro": importlib.metadata.version("tflite-micro"),
                    "tensorflow": importlib.metadata.version("tensorflow-cpu")},
        "models": rows,
    }
    out = HERE / "results" / "tflm_arena"
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    m = result["machine"]
    lines = [
        "# TFLite Micro arena: kerascompress's plan against TFLM's allocator",
        "",
        f"Machine: {m['cpu_model']} ({m['arch']}), tflite-micro {m['tflite_micro']} (PyPI host build, reference kernels), "
        f"TensorFlow {m['tensorflow']}, Python {m['python']}. Run {result['date_utc']} UTC. "
        "Script: benchmarks/bench_tflm_arena.py. Models: int8 with int8 input and output.",
        "",
        "| model | operators | model bytes | planned head | TFLM head | TFLM tail | TFLM total | peak live bytes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {r['operators']} | {r['model_bytes']:,} | {r['planned_head_bytes']:,} | {r['tflm_head_bytes']:,} "
            f"| {r['tflm_tail_bytes']:,} | {r['tflm_total_bytes']:,} | {r['peak_live_bytes']:,} |"
        )
    lines += [
        "",
        "Reading it: the head holds the activations as TFLM's greedy planner lays them out, and the plan matches it "
        "byte for byte; the tail (persistent structs, quantization parameters) comes on top, a few KB for these "
        "models; kernels optimized for a device (CMSIS-NN) may also request scratch buffers that the host's "
        "reference kernels do not. `peak live bytes` is the most bytes alive at one operator, a lower bound no "
        "layout beats.",
    ]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
