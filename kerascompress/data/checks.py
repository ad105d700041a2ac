"""Checks on the user's data before any pass runs, each failing with what is wrong and how to fix it.

Bad data does not always fail loudly downstream: NaN inputs make every comparison
False (so nothing is ever rolled back), strings reach TensorFlow as a cryptic
conversion error, and float targets cast to class ids give a meaningless accuracy.
These checks look at the arrays only; whether labels fit the model's outputs is
decided with the model (`kerascompress.models.preflight`).
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

from kerascompress.data.samples import as_list, n_samples
from kerascompress.errors import DataError


def as_array(value: Any, what: str) -> np.ndarray:
    """``value`` as a numpy array, or a `DataError` when it is ragged or not array-like."""
    if hasattr(value, "numpy") and not isinstance(value, np.ndarray):
        value = value.numpy()
    try:
        return np.asarray(value)
    except (ValueError, TypeError) as exc:
        raise DataError(
            f"{what} cannot be made into one array ({exc}); give equally shaped samples (pad or resize them)"
        ) from exc


def check_input_values(x: Any, where: str = "`data`") -> None:
    """Inputs must be numbers, finite, and every input must have the same number of samples."""
    arrays = [as_array(a, f"{where} input {i}") for i, a in enumerate(as_list(x))]
    if not arrays:
        raise DataError(f"{where} holds no input arrays")
    lengths = [len(a) if a.ndim else 0 for a in arrays]
    if len(set(lengths)) > 1:
        raise DataError(f"{where}: the model's inputs have different numbers of samples {lengths}; they must match")
    for i, a in enumerate(arrays):
        name = f"{where} input {i}" if len(arrays) > 1 else f"{where} inputs"
        if a.dtype.kind in "USO":
            sample = next(iter(a.reshape(-1)), "")
            if a.dtype.kind in "US":
                raise DataError(
                    f"{name} hold strings (e.g. {str(sample)!r}); the model takes numeric arrays: turn text into "
                    f"token ids first (e.g. keras.layers.TextVectorization)"
                )
            raise DataError(
                f"{name} hold Python objects (e.g. a {type(sample).__name__}), such as samples of different shapes; "
                f"give one numeric array with equally shaped samples (pad or resize them)"
            )
        if a.dtype.kind == "c":
            raise DataError(f"{name} are complex numbers; the model takes real-valued arrays")
        if a.dtype.kind == "f":
            bad = ~np.isfinite(a)
            if bad.any():
                rows = np.flatnonzero(bad.reshape(len(a), -1).any(axis=1))
                raise DataError(
                    f"{name} hold {int(np.isnan(a).sum())} NaN and {int(np.isinf(a).sum())} Inf values (in "
                    f"{len(rows)} samples, e.g. sample {int(rows[0])}); calibration and accuracy would be meaningless: "
                    f"drop or impute those samples"
                )


def numeric_labels(labels: Any, name: str = "labels") -> np.ndarray:
    """``labels`` as a numeric array, or a `DataError` for strings, objects, complex numbers, NaN or Inf."""
    a = as_array(labels, name)
    if a.dtype.kind in "USO":
        sample = next(iter(a.reshape(-1)), "")
        raise DataError(
            f"{name} are {'strings' if a.dtype.kind in 'US' else 'Python objects'} (e.g. {str(sample)!r}); the model's "
            f"outputs are numbers, so encode the labels as integer class ids in the order of the model's output "
            f"units, e.g. classes, y = np.unique(labels, return_inverse=True)"
        )
    if a.dtype.kind == "c":
        raise DataError(f"{name} are complex numbers; give real class ids, one-hot rows or target values")
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        raise DataError(f"{name} hold {int((~np.isfinite(a)).sum())} NaN/Inf values; drop or fix those samples")
    return a


def check_label_values(y: Any, n: int, where: str = "`data`") -> None:
    """Labels (one array, or one per output): as many as samples, numbers (not strings), finite."""
    several = isinstance(y, (list, tuple, dict))
    for i, labels in enumerate(as_list(y) if several else [y]):
        if labels is None:
            continue
        a = numeric_labels(labels, f"{where} labels" + (f" {i}" if several else ""))
        if a.ndim == 0 or len(a) != n:
            raise DataError(f"{where} has {n} inputs but {0 if a.ndim == 0 else len(a)} labels; they must match")


def check_part(x: Any, y: Any, where: str, allow_empty: bool = False) -> None:
    """One part of the data (training or held-out): samples present, values sane, labels matching."""
    n = n_samples(x) if x is not None else 0
    if n == 0:
        if allow_empty:
            return
        raise DataError(f"{where} is empty: give at least a few hundred samples for calibration and evaluation")
    check_input_values(x, where)
    if y is not None:
        check_label_values(y, n, where)


def check_inputs(x: Any, input_shapes: Sequence[tuple], input_dtypes: Optional[Sequence[Any]] = None) -> None:
    """Raise a `DataError` naming the mismatch when ``x`` does not fit the model's inputs (shapes, dtypes)."""
    arrays = as_list(x)
    if len(arrays) != len(input_shapes):
        hint = " (labels go in the second element of an (x, y) tuple, not in a list)" if len(arrays) == 2 else ""
        raise DataError(f"the model has {len(input_shapes)} inputs but `data` provides {len(arrays)}{hint}")
    for i, (a, shape) in enumerate(zip(arrays, input_shapes)):
        got = tuple(np.shape(a)[1:])
        want = tuple(shape[1:])
        if len(got) != len(want) or any(w is not None and w != g for w, g in zip(want, got)):
            raise DataError(
                f"input {i}: the model expects samples of shape {want} but `data` has {got}; "
                f"reshape or resize the data to the model's input"
            )
        dtype = None if input_dtypes is None else input_dtypes[i]
        if dtype is not None and "int" in str(dtype):
            values = as_array(a, f"input {i}")
            if values.dtype.kind == "f" and not np.all(values == np.round(values)):
                raise DataError(
                    f"input {i} of the model takes integer ids ({dtype}) but `data` holds non-integer floats; "
                    f"pass the token or category ids themselves"
                )
