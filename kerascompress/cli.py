"""The ``kerascompress`` command line (absl-py): optimize, validate, targets, demo."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("target", "auto", "Target profile name, a YAML path, or 'auto' for this host.")
flags.DEFINE_string("out", None, "Output folder for the model, artifacts and report.")
flags.DEFINE_string("recipe", "default", "Recipe name (configs/recipes) or YAML path.")
flags.DEFINE_string(
    "data", None, "Data: 'fashion_mnist', 'digits', or an .npz holding x and y (or x_train, y_train, x_eval, y_eval)."
)
flags.DEFINE_float("max_accuracy_drop", 0.01, "Largest accuracy drop allowed (0.01 = one point).")
flags.DEFINE_string("reference", None, "validate: the Keras model the artifact must match.")
flags.DEFINE_integer("runs", 50, "Timed runs for latency.")
flags.DEFINE_integer("threads", 1, "Runtime threads for latency.")
flags.DEFINE_integer("epochs", 3, "demo: training epochs for the Fashion-MNIST CNN (first run only; cached).")
flags.DEFINE_integer("train_limit", None, "demo: train on the first N Fashion-MNIST images (default: all 60000).")
flags.DEFINE_string("cache_dir", None, "demo: where the trained model is cached (default ~/.cache/kerascompress).")
flags.DEFINE_bool("strict", False, "Fail instead of skipping passes the target cannot use.")
flags.DEFINE_float("max_latency_ms", None, "Latency budget in milliseconds on the target's runtime.")
flags.DEFINE_float("latency_ratio", None, "Latency budget as a fraction of the float32 baseline (0.2 = a fifth).")
flags.DEFINE_integer("max_size_bytes", None, "Size budget of the deployable file in bytes.")
flags.DEFINE_float("size_ratio", None, "Size budget as a fraction of the float32 baseline's file.")
flags.DEFINE_enum("objective", "latency", ["latency", "size"], "What the search minimises.")
flags.DEFINE_float("max_search_seconds", 1200.0, "Wall-clock budget of the search.")
flags.DEFINE_string("latency_table", None, "optimize: a latency table from `kerascompress profile` on the device.")
flags.DEFINE_bool("unsafe_load", False, "Allow model files holding Python code (Lambda layers) to run it when loaded: "
                  "only for files you trust (Keras' safe_mode=False).")
flags.DEFINE_bool("verbose", False, "Show TensorFlow's native and converter log lines (hidden by default).")
flags.DEFINE_bool("debug", False, "On an error, show the Python traceback (implies --verbose).")

USAGE = """usage:
  kerascompress optimize MODEL [--target T] [--out DIR] [--recipe R] [--data D]
  kerascompress validate ARTIFACT --reference MODEL [--data D]
  kerascompress targets
  kerascompress profile MODEL [--out table.json]    (on the target device: its per-group latency table)
  kerascompress demo [--out DIR] [--epochs N]
common flags: --verbose (TensorFlow's log lines), --debug (tracebacks), --unsafe_load (trusted Lambda layers)
"""


def _load_data(spec: Optional[str]) -> Any:
    """Data for the pipeline from a command-line spec (None when not given)."""
    if spec is None:
        return None
    from kerascompress.data.bundle import DataBundle
    from kerascompress.errors import DataError
    from kerascompress.examples import datasets

    if spec == "fashion_mnist":  # the test split is the validation data: never trained or calibrated on
        xt, yt = datasets.fashion_mnist("train")
        xe, ye = datasets.fashion_mnist("test")
        return DataBundle(xt, yt, xe, ye)
    if spec == "digits":
        x, y = datasets.digits()
        return (x, y)
    path = Path(spec)
    if path.suffix == ".npz" and path.exists():
        with __import__("numpy").load(path) as npz:
            keys = set(npz.files)
            if {"x_train", "x_eval"} <= keys:
                return DataBundle(npz["x_train"], npz.get("y_train"), npz["x_eval"], npz.get("y_eval"))
            if "x" in keys:
                return (npz["x"], npz["y"] if "y" in keys else None)
            raise DataError(f"{path} must hold arrays 'x' (and 'y'), or 'x_train', 'y_train', 'x_eval', 'y_eval'")
    raise DataError(f"--data {spec!r}: give 'fashion_mnist', 'digits', or an existing .npz file")


def cmd_targets() -> int:
    from kerascompress import targets

    host = targets.detect()
    print(f"This host: {host.name} ({host.runtime}, {host.device}, {host.arch})")
    print("  " + ", ".join(f"{p}: {k}" for p, k in sorted(host.to_dict()["precisions"].items())))
    print("\nProfiles (configs/targets):")
    for name in targets.list_profiles():
        t = targets.load(name)
        fast = [p for p in ("fp32", "fp16", "bf16", "int8", "fp8", "int4") if t.supports(p)]
        print(f"  {name:28s} {t.runtime:9s} {t.device:4s} fast: {', '.join(fast) or '-'}   {t.description}")
    return 0


def _model_arg(path: str) -> Any:
    """The model for a path argument: the path itself, or the model loaded with safe_mode off (--unsafe_load)."""
    if not FLAGS.unsafe_load:
        return path
    from kerascompress.models.io import load_model

    return load_model(path, safe_mode=False)


def cmd_optimize(model_path: str) -> int:
    import kerascompress as kc

    result = kc.optimize(
        _model_arg(model_path),
        target=FLAGS.target,
        data=_load_data(FLAGS.data),
        recipe=FLAGS.recipe,
        constraints=kc.Constraints(
            max_accuracy_drop=FLAGS.max_accuracy_drop, max_latency_ms=FLAGS.max_latency_ms,
            latency_ratio=FLAGS.latency_ratio, max_size_bytes=FLAGS.max_size_bytes, size_ratio=FLAGS.size_ratio,
            objective=FLAGS.objective, max_search_seconds=FLAGS.max_search_seconds,
        ),
        output_dir=FLAGS.out or "kerascompress_out",
        strict=FLAGS.strict,
        latency_runs=FLAGS.runs,
        latency_table=FLAGS.latency_table,
    )
    print(result.report.to_markdown())
    return 0


def cmd_validate(artifact: str) -> int:
    import kerascompress as kc
    from kerascompress.errors import ConfigError

    if not FLAGS.reference:
        raise ConfigError("validate needs --reference MODEL (the Keras model the artifact must match)")
    data = _load_data(FLAGS.data)
    if data is not None and not isinstance(data, tuple):
        data = (data.x_eval, data.y_eval)
    result = kc.validate(artifact, reference=_model_arg(FLAGS.reference), data=data, num_threads=FLAGS.threads,
                         runs=FLAGS.runs)
    print(json.dumps(_plain(result), indent=2, default=str))
    return 0


def cmd_profile(model_path: str) -> int:
    from kerascompress.pipeline.profile import profile_latency

    out = FLAGS.out or "latency_table.json"
    table = profile_latency(model_path, target=FLAGS.target, path=out, runs=FLAGS.runs)
    full = table.samples[0]["cost"] if table.samples else float("nan")
    print(f"{len(table.samples)} configurations measured, full model {full:.4f} {table.unit}, "
          f"fit error {table.fit_error * 100:.1f}%; written to {out}")
    return 0


def _plain(obj: Any) -> Any:
    import dataclasses

    return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj


def cmd_demo() -> int:
    from kerascompress.examples.demo import run_demo

    report = run_demo(
        out_dir=Path(FLAGS.out or "kerascompress_demo"),
        cache_dir=Path(FLAGS.cache_dir) if FLAGS.cache_dir else None,
        epochs=FLAGS.epochs,
        target=FLAGS.target,
        train_limit=FLAGS.train_limit,
        recipe=FLAGS.recipe,
    )
    print(report.to_markdown())
    return 0


def main(argv: Sequence[str]) -> int:
    from kerascompress import console

    if not (FLAGS.verbose or FLAGS.debug):
        console.quiet()  # again: absl.app turned its logging up to INFO after parsing the flags
    args = list(argv[1:])
    if not args or args[0] in ("help", "-h"):
        print(USAGE)
        return 0 if args else 2
    command, rest = args[0], args[1:]
    commands = {"targets": (0, cmd_targets), "demo": (0, cmd_demo), "optimize": (1, cmd_optimize),
                "validate": (1, cmd_validate), "profile": (1, cmd_profile)}
    if command not in commands or len(rest) != commands[command][0]:
        _error(f"bad command line {' '.join(args)!r}; run 'kerascompress help' for the usage")
        return 2
    try:
        return commands[command][1](*rest)
    except Exception as exc:  # noqa: BLE001 - the command line reports every failure in one line
        return _report(exc)
    except KeyboardInterrupt:
        _error("interrupted")
        return 130


def _report(exc: Exception) -> int:
    """One line on stderr naming the problem (the traceback too with --debug); the exit status."""
    from kerascompress.errors import KerasCompressError

    if FLAGS.debug:
        import traceback

        traceback.print_exception(exc)
    if isinstance(exc, KerasCompressError):
        _error(str(exc))
    else:
        message = " ".join(str(exc).split())
        _error(f"unexpected {type(exc).__name__}: {message[:400]}"
               + ("" if FLAGS.debug else " (run again with --debug for the traceback, and please report it)"))
    return 1


def _error(message: str) -> None:
    print(f"kerascompress: error: {' '.join(message.split())}", file=sys.stderr, flush=True)


def _shows_native_logs(argv: Sequence[str]) -> bool:
    """--verbose or --debug on the command line (read before absl parses it, to act before TF loads)."""
    on = {"--verbose", "--debug", "--verbose=true", "--debug=true", "--verbose=1", "--debug=1"}
    return any(a.lower() in on for a in argv)


def _parse_flags(argv: Sequence[str]) -> list[str]:
    """absl's parser with dashes accepted in flag names and a one-line error instead of the usage dump."""
    normal = []
    for a in argv:
        if a.startswith("--") and len(a) > 2:
            name, eq, value = a[2:].partition("=")
            a = "--" + name.replace("-", "_") + eq + value
        normal.append(a)
    try:
        return FLAGS(normal)
    except flags.Error as exc:
        _error(f"{exc}; run 'kerascompress help' for the usage")
        sys.exit(2)


def run() -> None:
    """Console-script entry point: quiets TensorFlow before anything imports it."""
    if not _shows_native_logs(sys.argv):
        from kerascompress import console

        console.quiet()
    app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
    run()
