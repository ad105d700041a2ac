"""Benchmark of the budget-driven search (not a test; heavy: about 1.5 hours on 2 cores).

A residual CNN (32-channel stem, residual blocks of 32, 64 and 128 channels with batch
norm, global pooling, one Dense; 309k parameters) is trained on all 60,000 Fashion-MNIST
training images. The test set's first half is the validation data every verdict uses;
its second half is never seen by any run and judges the results.

Runs, each through `kc.optimize` with the library's defaults unless said:
  A. the default recipe, 1-point budget (the product as a user gets it);
  B. the `quantize` recipe: int8 post-training quantization only (what tfmot gives; its
     own figures on the same network are in benchmarks/results/tfmot_twin.md);
  C. the control: uniform widths (ChannelSearch(uniform=True)) with a latency budget
     equal to A's measured latency, same distillation: searched widths against uniform
     widths at the same latency;
  D. the default recipe with a latency budget of a sixth of the float32 latency;
  E. MobileNetV2 (alpha 0.35, weights=None, Fashion-MNIST padded to 32x32 and repeated
     to 3 channels, trained here) through the default recipe: speed-up against MAC
     reduction.
Also measured: how well two latency models predict whole configurations of the residual
CNN (adding per-group deltas, NetAdapt's table, against the fitted MAC model the
search uses).

All final .tflite files of a network are timed together, interleaved, in one run at the
end (LiteRT + XNNPACK, 1 thread, batch 1) and reported as ratios to the float32 baseline
of that run.

    nice python benchmarks/bench_search.py [--quick] [--runs A,B,C,D,E]

Results go to benchmarks/results/search.json and search.md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"
WORK = ROOT / "benchmarks" / "out" / "search"  # one folder per results name: see main()
CACHE = Path(os.environ.get("KERASCOMPRESS_CACHE", Path.home() / ".cache" / "kerascompress")) / "bench"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ----------------------------------------------------------------------------- models and data


def residual_cnn():
    """The network of the issue: stem 32, residual blocks of 32, 64 and 128 channels, GAP, Dense."""
    import keras
    from keras import layers

    inp = keras.Input((28, 28, 1), name="image")
    x = layers.Conv2D(32, 3, padding="same", use_bias=False, name="stem_conv")(inp)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.ReLU(name="stem_relu")(x)
    cin = 32
    for i, (w, s) in enumerate([(32, 1), (64, 2), (128, 2)]):
        p = f"b{i + 1}_"
        y = layers.Conv2D(w, 3, strides=s, padding="same", use_bias=False, name=p + "conv1")(x)
        y = layers.BatchNormalization(name=p + "bn1")(y)
        y = layers.ReLU(name=p + "relu1")(y)
        y = layers.Conv2D(w, 3, padding="same", use_bias=False, name=p + "conv2")(y)
        y = layers.BatchNormalization(name=p + "bn2")(y)
        if w != cin or s != 1:
            sc = layers.Conv2D(w, 1, strides=s, use_bias=False, name=p + "proj")(x)
            sc = layers.BatchNormalization(name=p + "proj_bn")(sc)
        else:
            sc = x
        x = layers.Add(name=p + "add")([y, sc])
        x = layers.ReLU(name=p + "relu2")(x)
        cin = w
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inp, layers.Dense(10, activation="softmax", name="fc")(x), name="residual_cnn")


def mobilenet_v2():
    import keras

    return keras.applications.MobileNetV2(input_shape=(32, 32, 3), alpha=0.35, weights=None, classes=10,
                                          include_top=True)


def as_rgb32(x: np.ndarray) -> np.ndarray:
    """28x28x1 -> 32x32x3: padded by 2 and the channel repeated (what MobileNetV2 takes)."""
    return np.repeat(np.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0))), 3, axis=-1)


def trained(name: str, build, x, y, epochs: int) -> tuple[object, float]:
    """The model trained (Adam 1e-3 for ``epochs``, then one epoch at 1e-4), cached.

    BatchNorm's moving statistics lag weights that still move fast at the end of
    training (4 epochs at 1e-3 left this network at 84% instead of 92%), so the last
    epoch runs at a tenth of the rate and the statistics are then re-estimated on
    4,096 training images.
    """
    import keras

    from kerascompress.training.batchnorm import recalibrate_batchnorm

    path = CACHE / f"{name}_e{epochs}.keras"
    if path.exists():
        log(f"using the cached {name} ({path})")
        return keras.models.load_model(path), 0.0
    keras.utils.set_random_seed(0)
    model = build()
    started = time.time()
    for lr, n in ((1e-3, epochs), (1e-4, 1)):
        model.compile(optimizer=keras.optimizers.Adam(lr), loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"])
        model.fit(x, y, batch_size=128, epochs=n, verbose=2)
    recalibrate_batchnorm(model, x[:4096], max_samples=4096)
    seconds = time.time() - started
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)
    return model, seconds


# ----------------------------------------------------------------------------- measuring


def accuracy(tflite: bytes, x: np.ndarray, y: np.ndarray) -> float:
    from kerascompress.runtime.litert import LiteRTModel

    return float((LiteRTModel(tflite).predict(x).argmax(-1) == y).mean())


def paired(base: bytes, cand: bytes, x: np.ndarray, y: np.ndarray) -> dict:
    from kerascompress.metrics.statistics import paired_difference
    from kerascompress.runtime.litert import LiteRTModel

    b = LiteRTModel(base).predict(x).argmax(-1) == y
    c = LiteRTModel(cand).predict(x).argmax(-1) == y
    d = paired_difference(b, c)
    return {"drop_points": round(d.drop * 100, 3), "se_points": round(d.standard_error * 100, 3),
            "interval_95_points": [round(v * 100, 3) for v in d.interval]}


def time_together(files: dict[str, bytes], runs: int) -> dict[str, float]:
    from kerascompress.runtime.timing import compare_latency

    stats = compare_latency(files, runs=runs, warmup=10, block=10)
    return {k: s.median_ms for k, s in stats.items()}


def run_optimize(label: str, model, data, val, **kw) -> dict:
    import kerascompress as kc

    out = WORK / label
    started = time.time()
    result = kc.optimize(model, target="auto", data=data, validation_data=val, output_dir=out, **kw)
    seconds = time.time() - started
    report = result.report
    steps = {s.name: {"status": s.status, "reason": s.reason[:300]} for s in report.steps}
    search = next((s for s in report.steps if s.name == "channel_search"), None)
    row = {"seconds": round(seconds, 1), "steps": steps, "final_precision": report.final.precision,
           "final_params": report.final.params, "final_macs": report.final.macs,
           "baseline_macs": report.baseline.macs, "constraints_met": report.constraints_met,
           "tflite": str(out / "model.tflite"), "baseline_tflite": str(out / "baseline_float32.tflite")}
    if search is not None and search.details:
        d = search.details
        row["search"] = {k: d.get(k) for k in ("walk_end", "cost_budget", "seconds", "stopped_by_time_budget",
                                               "nothing_passed")}
        row["search"]["cost_model"] = {k: d["cost_model"].get(k) for k in ("source", "unit", "fit_error", "terms",
                                                                          "coef")} if "cost_model" in d else None
        row["search"]["candidates"] = [{k: c.get(k) for k in ("index", "phase", "widths", "predicted_cost",
                                                              "latency_ms", "size_bytes", "accuracy",
                                                              "accuracy_drop", "accuracy_drop_se", "verdict",
                                                              "epochs", "seconds", "chosen")}
                                       for c in d.get("candidates", [])]
        chosen = d.get("chosen") or {}
        row["widths"] = chosen.get("widths")
    log(f"{label}: {seconds:.0f}s; " + ", ".join(f"{k}: {v['status']}" for k, v in steps.items()))
    return row


def additivity(model, x_calib: np.ndarray, runs: int) -> dict:
    """Per-group deltas added up (NetAdapt's table) against the fitted MAC model, on measured whole configurations."""
    from kerascompress.export.tflite import to_tflite
    from kerascompress.graph.channel_groups import find_channel_groups
    from kerascompress.graph.model_graph import ModelGraph
    from kerascompress.passes.importance import channel_importance
    from kerascompress.quant.plan import PrecisionPlan
    from kerascompress.search.cost_model import fit, sample_configurations
    from kerascompress.search.features import CostFeatures
    from kerascompress.search.widths import pruned_model, width_steps

    graph = ModelGraph.from_keras(model)
    groups = find_channel_groups(graph)
    scores = channel_importance(graph, groups, "l1")
    steps = {g.id: width_steps(g.size, 16, 8, 0.875) for g in groups.prunable}
    steps = {g: ws for g, ws in steps.items() if len(ws) > 1}
    features = CostFeatures(graph, groups)
    singles = {f"g{g}": {g: ws[len(ws) // 2]} for g, ws in steps.items()}
    joints = {f"j{i}": c for i, c in enumerate(sample_configurations(steps, 12, seed=7)[1:])}
    configs = {"full": {}, **singles, **joints}

    def build(c):
        return to_tflite(pruned_model(graph, groups, scores, c, "m"), PrecisionPlan("int8"),
                         representative_data=x_calib, num_samples=len(x_calib))

    ms = time_together({k: build(c) for k, c in configs.items()}, runs)
    full = ms["full"]
    add_err = []
    for k, c in joints.items():
        pred = full + sum(ms[f"g{g}"] - full for g, w in c.items() if f"g{g}" in singles and singles[f"g{g}"][g] == w)
        # configurations whose widths differ from the singles' are predicted by interpolation on the single curve
        for g, w in c.items():
            if f"g{g}" in singles and singles[f"g{g}"][g] != w:
                s_w = singles[f"g{g}"][g]
                full_w = steps[g][0]
                slope = (ms[f"g{g}"] - full) / max(full_w - s_w, 1)
                pred += slope * (full_w - w)
        add_err.append(abs(pred - ms[k]) / ms[k])
    samples = [{"widths": {str(g): w for g, w in c.items()}, "cost": ms[k]} for k, c in configs.items()]
    terms = ["const"] + [f"macs:{k}" for k in features.kinds]
    _, loo = fit(features, samples, terms)
    return {"configurations": len(joints), "additive_mean_rel_error": round(float(np.mean(add_err)), 3),
            "additive_max_rel_error": round(float(np.max(add_err)), 3),
            "fitted_macs_leave_one_out_rel_error": round(loo, 3)}


# ----------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="a smoke run: small data, short budgets")
    ap.add_argument("--runs", default="A,B,C,D,E")
    ap.add_argument("--name", default=None, help="results file name (default: search, or search_quick)")
    args = ap.parse_args()
    runs = set(args.runs.split(","))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

    import kerascompress as kc
    from kerascompress.examples import datasets
    from kerascompress.passes.channel_search import ChannelSearch
    from kerascompress.passes.quantize import Quantize
    from kerascompress.pipeline.profile import shipping_precision  # noqa: F401 - documents what B ships

    started = time.time()
    n_train = 6000 if args.quick else None
    xtr, ytr = datasets.fashion_mnist("train", limit=n_train)
    xte, yte = datasets.fashion_mnist("test")
    val, judge = (xte[:5000], yte[:5000]), (xte[5000:], yte[5000:])
    budget_s = 240.0 if args.quick else 1200.0
    timing_runs = 100 if args.quick else 400
    results: dict = {"machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                                 "load_average_at_start": os.getloadavg()[0], "python": platform.python_version()},
                     "quick": args.quick, "complete": False, "residual_cnn": {}, "mobilenet_v2": {}}
    name = args.name or ("search_quick" if args.quick else "search")
    global WORK
    WORK = WORK.parent / name
    try:
        import tensorflow as tf

        results["machine"]["tensorflow"] = tf.__version__
    except ImportError:  # pragma: no cover
        pass

    model, train_s = trained("residual_cnn" + ("_quick" if args.quick else ""), residual_cnn, xtr, ytr,
                             1 if args.quick else 4)
    r = results["residual_cnn"]
    r["params"] = int(model.count_params())
    r["train_seconds"] = round(train_s, 1)
    r["keras_test_accuracy"] = float((model.predict(xte, verbose=0).argmax(-1) == yte).mean())
    log(f"residual CNN: {r['params']} params, test accuracy {r['keras_test_accuracy']:.4f}")
    constraints = kc.Constraints(max_accuracy_drop=0.01, max_search_seconds=budget_s)
    if "A" in runs:
        r["A_default"] = run_optimize("A", model, (xtr, ytr), val, constraints=constraints)
        save(results, name)
    if "B" in runs:
        r["B_int8_ptq"] = run_optimize("B", model, (xtr, ytr), val, recipe="quantize", constraints=constraints)
        save(results, name)
    if "C" in runs and "A_default" in r:
        a_ms = next((c["latency_ms"] for c in r["A_default"].get("search", {}).get("candidates", []) if c.get("chosen")),
                    None)
        if a_ms:
            r["C_uniform_at_A_latency"] = run_optimize(
                "C", model, (xtr, ytr), val, recipe=[Quantize("int8"), ChannelSearch(uniform=True)],
                constraints=kc.Constraints(max_accuracy_drop=0.01, max_search_seconds=budget_s, max_latency_ms=a_ms))
            save(results, name)
    if "D" in runs:
        r["D_latency_sixth"] = run_optimize(
            "D", model, (xtr, ytr), val,
            constraints=kc.Constraints(max_accuracy_drop=0.01, max_search_seconds=budget_s, latency_ratio=1 / 6))
        save(results, name)
    if "additivity" in runs or "A" in runs:
        r["latency_model_check"] = additivity(model, xtr[:256], 60 if args.quick else 200)
        log(f"latency models: {r['latency_model_check']}")
    files = {"float32": (WORK / "B" / "baseline_float32.tflite").read_bytes()} if (WORK / "B").exists() else {}
    for key in [k for k in r if k[:2] in ("A_", "B_", "C_", "D_")]:
        path = Path(r[key]["tflite"])
        if path.exists():
            files[key] = path.read_bytes()
            if "float32" not in files:
                files["float32"] = Path(r[key]["baseline_tflite"]).read_bytes()
    if files:
        ms = time_together(files, timing_runs)
        base = files["float32"]
        r["float32"] = {"ms": round(ms["float32"], 5), "bytes": len(base),
                        "judge_accuracy": accuracy(base, *judge)}
        for key, blob in files.items():
            if key == "float32":
                continue
            r[key].update({"ms": round(ms[key], 5), "bytes": len(blob), "speedup_vs_float32": round(ms["float32"] / ms[key], 2),
                           "smaller_vs_float32": round(len(base) / len(blob), 2), "judge_accuracy": accuracy(blob, *judge),
                           "judge_vs_float32": paired(base, blob, *judge),
                           "validation_vs_float32": paired(base, blob, *val)})

    if "E" in runs:
        m = results["mobilenet_v2"]
        x3, xt3 = as_rgb32(xtr), as_rgb32(xte)
        mnet, train_s = trained("mobilenet_v2_035" + ("_quick" if args.quick else ""), mobilenet_v2, x3, ytr,
                                1 if args.quick else 3)
        m["train_seconds"] = round(train_s, 1)
        m["keras_test_accuracy"] = float((mnet.predict(xt3, verbose=0).argmax(-1) == yte).mean())
        save(results, name)
        m["E_default"] = run_optimize("E", mnet, (x3, ytr), (xt3[:5000], yte[:5000]), constraints=constraints)
        save(results, name)
        e = m["E_default"]
        blobs = {"float32": Path(e["baseline_tflite"]).read_bytes(), "E": Path(e["tflite"]).read_bytes()}
        int8_unpruned = WORK / "E" / "int8_unpruned.tflite"
        from kerascompress.export.tflite import to_tflite
        from kerascompress.quant.plan import PrecisionPlan

        blobs["int8_unpruned"] = to_tflite(mnet, PrecisionPlan("int8"), representative_data=x3[:256], num_samples=256)
        int8_unpruned.write_bytes(blobs["int8_unpruned"])
        ms = time_together(blobs, timing_runs)
        e.update({"ms": ms["E"], "float32_ms": ms["float32"], "int8_unpruned_ms": ms["int8_unpruned"],
                  "speedup_vs_float32": round(ms["float32"] / ms["E"], 2),
                  "speedup_vs_int8_unpruned": round(ms["int8_unpruned"] / ms["E"], 2),
                  "mac_reduction": round(e["baseline_macs"] / max(e["final_macs"], 1), 2),
                  "judge_accuracy": accuracy(blobs["E"], xt3[5000:], yte[5000:]),
                  "float32_judge_accuracy": accuracy(blobs["float32"], xt3[5000:], yte[5000:])})
        e["speedup_over_mac_reduction"] = round(e["speedup_vs_int8_unpruned"] / max(e["mac_reduction"], 1e-9), 2)

    results["seconds"] = round(time.time() - started, 1)
    results["complete"] = True
    save(results, name)
    (RESULTS / f"{name}.md").write_text(markdown(results))
    log(f"written {RESULTS / (name + '.md')}")


def save(results: dict, name: str) -> None:
    """Write what is measured so far: a run killed late keeps its finished parts."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(results, indent=2, default=str))


def markdown(res: dict) -> str:
    m = res["machine"]
    r = res["residual_cnn"]
    lines = ["# Budget-driven search (`benchmarks/bench_search.py`)", "",
             f"Machine: {m.get('cpu')} ({m.get('cores')} cores, shared; load average {m.get('load_average_at_start'):.1f} "
             f"at start), TensorFlow {m.get('tensorflow')}, Python {m.get('python')}. Total {res['seconds'] / 60:.0f} min."
             + (" QUICK smoke run: small data, short budgets; not the figures quoted in docs." if res["quick"] else ""),
             "",
             ("Residual CNN on Fashion-MNIST (all 60,000 training images): validation data = test images 0-4999 "
             "(every verdict), judged here on test images 5000-9999 (never seen by any run). Latency: LiteRT + XNNPACK, "
             "1 thread, batch 1, all files timed together in one interleaved run; ratios against the float32 file of that run."),
             "",
             f"Baseline: {r.get('params'):,} parameters, Keras test accuracy {r.get('keras_test_accuracy', 0):.4f}.",
             "",
             ("| run | speed-up vs float32 | smaller vs float32 | judge accuracy | drop vs float32 (judge, points ± SE) | "
             "drop (validation) | widths | search time |"),
             "|---|---|---|---|---|---|---|---|"]
    f32 = r.get("float32", {})
    if f32:
        lines.append(f"| float32 | 1.00x ({f32['ms']:.4f} ms) | 1.00x ({f32['bytes']:,} B) | {f32['judge_accuracy']:.4f} | - | - | - | - |")
    for key in sorted(k for k in r if k[:2] in ("A_", "B_", "C_", "D_")):
        row = r[key]
        if "ms" not in row:
            continue
        j, v = row["judge_vs_float32"], row["validation_vs_float32"]
        widths = " ".join(str(w) for w in (row.get("widths") or {}).values()) or "-"
        lines.append(f"| {key} | {row['speedup_vs_float32']:.2f}x | {row['smaller_vs_float32']:.2f}x | "
                     f"{row['judge_accuracy']:.4f} | {j['drop_points']:+.2f} ± {j['se_points']:.2f} | "
                     f"{v['drop_points']:+.2f} ± {v['se_points']:.2f} | {widths} | {row['seconds'] / 60:.1f} min |")
    if "latency_model_check" in r:
        c = r["latency_model_check"]
        lines += ["", (f"Latency models on {c['configurations']} measured whole configurations (int8): per-group deltas "
                      f"added up (NetAdapt's table) err {c['additive_mean_rel_error'] * 100:.0f}% on average "
                      f"(worst {c['additive_max_rel_error'] * 100:.0f}%); the fitted MAC model the search uses "
                      f"{c['fitted_macs_leave_one_out_rel_error'] * 100:.1f}% (leave-one-out).")]
    for key in sorted(k for k in r if k[:2] in ("A_", "C_", "D_")):
        s = r[key].get("search")
        if not s:
            continue
        lines += ["", f"### {key}: candidates", "", (f"Walk: {s.get('walk_end')}. Cost model: "
                  f"{(s.get('cost_model') or {}).get('source')}, fit error {((s.get('cost_model') or {}).get('fit_error') or 0) * 100:.1f}%."),
                  "", "| # | phase | widths | latency ms | bytes | validation accuracy | drop (points) | verdict | s |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for c in s["candidates"]:
            drop = "-" if c["accuracy_drop"] is None else f"{c['accuracy_drop'] * 100:+.2f}"
            lines.append(f"| {c['index']} | {c['phase']}{' (chosen)' if c.get('chosen') else ''} | "
                         f"{' '.join(str(w) for w in (c['widths'] or {}).values())} | {c['latency_ms'] or 0:.4f} | "
                         f"{c['size_bytes'] or 0:,} | {c['accuracy'] or 0:.4f} | {drop} | {c['verdict']} | {c['seconds']} |")
    e = res.get("mobilenet_v2", {}).get("E_default")
    if e and "ms" in e:
        lines += ["", "## MobileNetV2 (alpha 0.35, 32x32x3 Fashion-MNIST, trained here)", "",
                  (f"Keras test accuracy {res['mobilenet_v2']['keras_test_accuracy']:.4f}; default recipe: "
                  f"{e['speedup_vs_float32']:.2f}x faster than float32, {e['speedup_vs_int8_unpruned']:.2f}x faster than the "
                  f"unpruned int8 model for a {e['mac_reduction']:.2f}x MAC reduction (speed-up / MAC reduction = "
                  f"{e['speedup_over_mac_reduction']:.2f}); judge accuracy {e['judge_accuracy']:.4f} (float32 "
                  f"{e['float32_judge_accuracy']:.4f}); search {e['seconds'] / 60:.1f} min.")]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
