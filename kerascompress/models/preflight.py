"""Everything checked before any pass runs, in one call for the driver: bad input fails fast, nothing is lost.

Order: the model (loadable, built, finite weights; a subclassed one wrapped and
copyable), the data (values, then shapes and dtypes against the model's inputs), the
model's outputs on the first samples (it runs on them, and they are finite), the
labels against those outputs (class ids in range, shapes that fit), and the output
folder (a writable folder). Each failure is a `KerasCompressError` naming the problem
and the fix.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Optional

import numpy as np

from kerascompress.data.bundle import DataBundle, make_bundle
from kerascompress.data.checks import check_inputs
from kerascompress.data.samples import as_list, n_samples, take
from kerascompress.errors import DataError, UnsupportedModelError
from kerascompress.metrics.fidelity import CLASSES, check_class_ids, labels_per_output, output_kind
from kerascompress.models.copy import copy_model
from kerascompress.models.io import check_output_dir, check_supported, check_weights_finite, load_model
from kerascompress.models.subclassed import is_subclassed, wrap

#: Samples the model is run on to check its outputs and the labels against them.
SAMPLE = 256


@dataclasses.dataclass
class Checked:
    """The inputs of a run, checked: the model to work on (a subclassed one wrapped), the data, notes for the report."""

    model: Any
    data: Optional[DataBundle]
    notes: list[str] = dataclasses.field(default_factory=list)


def preflight(
    model: Any,
    data: Any = None,
    validation_data: Any = None,
    *,
    output_dir: Optional[str | Path] = None,
    seed: int = 0,
    safe_mode: bool = True,
) -> Checked:
    """Load and check ``model``, ``data``, ``validation_data`` and ``output_dir`` together; raise on the first problem."""
    original = load_model(model, safe_mode=safe_mode)
    check_supported(original)
    check_weights_finite(original)
    given = data is not None or validation_data is not None
    shapes = [tuple(t.shape) for t in getattr(original, "inputs", None) or []] or None
    bundle = make_bundle(data, validation_data, seed=seed, input_shapes=shapes) if given else None
    notes: list[str] = []
    if is_subclassed(original):
        original = _wrapped(original, None if bundle is None else take(bundle.x_eval, 1))
        notes.append(
            f"{original.name!r} is a subclassed model: Quantize, Cluster and Sparsity run on its weights and the "
            f"converter; passes that edit the layer graph (channel pruning, low-rank, QAT) are skipped"
        )
    inputs = list(getattr(original, "inputs", None) or [])
    shapes = [tuple(t.shape) for t in inputs]
    dtypes = [getattr(t.dtype, "name", str(t.dtype)) for t in inputs]
    names = [getattr(t, "name", None) for t in inputs]
    if bundle is not None:
        for part in (bundle.x_eval, bundle.x_train):
            if n_samples(part):
                named = isinstance(part, dict) and set(names) <= set(part)
                check_inputs([part[n] for n in names] if named else part, shapes, dtypes)
    sample = take(bundle.x_eval, SAMPLE) if bundle is not None else _random_inputs(shapes, dtypes, seed)
    outputs = _outputs_on(original, sample, from_data=bundle is not None)
    if bundle is not None and bundle.y_eval is not None:
        notes += _check_labels(original, outputs, bundle)
    elif any(output_kind(o) != CLASSES for o in outputs):
        notes.append(_value_note(original, outputs, [output_kind(o) for o in outputs]))
    if output_dir is not None:
        check_output_dir(output_dir)
    return Checked(original, bundle, notes)


def _wrapped(model: Any, x: Any) -> Any:
    wrapper = wrap(model, x)
    try:
        copy_model(wrapper)
    except Exception as exc:  # noqa: BLE001 - Keras fails in many ways to re-create user classes
        raise UnsupportedModelError(
            f"subclassed model {model.name!r} ({type(model).__name__}) cannot be re-created from its config, and "
            f"every pass works on a copy ({type(exc).__name__}: {' '.join(str(exc).split())[:300]}). Give it a "
            f"get_config() returning its constructor arguments (and from_config() if they are objects)"
        ) from exc
    return wrapper


def _random_inputs(shapes: list[tuple], dtypes: list[str], seed: int, n: int = 64) -> Any:
    rng = np.random.default_rng(seed)
    arrays = []
    for shape, dtype in zip(shapes, dtypes):
        dims = (n,) + tuple(1 if d is None else d for d in shape[1:])
        arrays.append(rng.integers(0, 2, dims).astype(dtype) if "int" in dtype
                      else rng.standard_normal(dims).astype(np.float32))
    return arrays[0] if len(arrays) == 1 else arrays


def _error_summary(exc: Exception) -> str:
    """The line of a (TensorFlow) error that says what went wrong, without the graph traceback it carries."""
    lines = [line.strip() for line in str(exc).splitlines()]
    useful = [line for line in lines if line and not line.startswith(("File ", "Detected at", "[[", "Graph execution"))]
    text = useful[-1] if useful else " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:400]}"


def _outputs_on(model: Any, x: Any, from_data: bool) -> list[np.ndarray]:
    """The model's outputs on ``x``, refusing a model that fails on them or gives NaN/Inf."""
    where = "held-out samples of `data`" if from_data else "random inputs (no data was given)"
    try:
        outputs = [np.asarray(o) for o in as_list(model.predict(x, batch_size=64, verbose=0))]
    except Exception as exc:  # noqa: BLE001 - a TF error on user data names the cause in its message
        raise DataError(
            f"the model fails on {where} (are they the inputs it was trained on?): {_error_summary(exc)}"
        ) from exc
    names = _output_names(model, len(outputs))
    for name, out in zip(names, outputs):
        if out.dtype.kind == "f" and not np.isfinite(out).all():
            bad = int((~np.isfinite(out)).reshape(len(out), -1).any(axis=1).sum())
            raise UnsupportedModelError(
                f"the model's output {name!r} is NaN/Inf on {bad} of {len(out)} {where}, before any "
                f"change: no compressed model could be judged against it. Its weights are finite, so look for an "
                f"overflow in the model (a log, division or exp) or data scaled differently from training"
            )
    return outputs


def _output_names(model: Any, n: int) -> list[str]:
    names = list(getattr(model, "output_names", None) or [])
    return names if len(names) == n else [f"output {i}" for i in range(n)]


def _check_labels(model: Any, outputs: list[np.ndarray], bundle: DataBundle) -> list[str]:
    """Labels must fit the outputs they label: class ids checked over all labels, kinds on the sample."""
    n = len(outputs[0])
    sample_labels = labels_per_output(bundle.y_eval[:n], len(outputs))
    kinds = []
    for out, y in zip(outputs, sample_labels):
        if y is not None and _are_class_ids(y, out):  # every label of both parts, not only the sample's
            parts = [np.asarray(p).reshape(-1) for p in (bundle.y_eval, bundle.y_train) if p is not None and len(p)]
            check_class_ids(np.concatenate(parts), int(out.shape[-1]))
        kinds.append(output_kind(out, y))
    return [_value_note(model, outputs, kinds)] if any(k != CLASSES for k in kinds) else []


def _are_class_ids(y: np.ndarray, out: np.ndarray) -> bool:
    y = np.asarray(y)
    ids_shape = y.shape[1:] in (out.shape[1:-1], out.shape[1:-1] + (1,))
    integral = y.dtype.kind in "biu" or bool(np.all(y == np.round(y)))
    return out.ndim >= 2 and out.shape[-1] > 1 and ids_shape and integral


def _value_note(model: Any, outputs: list[np.ndarray], kinds: list[str]) -> str:
    names = [name for name, kind in zip(_output_names(model, len(outputs)), kinds) if kind != CLASSES]
    return (
        f"output(s) {', '.join(repr(n) for n in names)} hold values, not class scores (regression or similar): they "
        f"are judged by their relative MSE against the original model (error energy over the output's variance), "
        f"held to max_accuracy_drop, not by accuracy"
    )
