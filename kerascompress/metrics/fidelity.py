"""How closely an artifact's outputs follow the Keras model's, and what that costs in accuracy.

Accuracy needs labels; fidelity (errors and top-1 agreement) does not, so a model can be
checked on unlabeled data too. Both are reported per output and as the worst case over
outputs, because one bad head should fail a multi-output model.

Not every output holds class scores. A regression head, an autoencoder's image or any
other *value* output is judged by its error against the original model (relative MSE:
the error's energy as a fraction of the output's variance), never by an arg-max: casting
float targets to class ids would score nonsense. `output_kind` decides per output, from
the labels when there are any, and refuses labels that cannot belong to the output
(strings, class ids outside its range, shapes that do not fit) with a `DataError`.
Class outputs are read on their last axis, so a segmentation map is scored per pixel.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

import numpy as np

from kerascompress.data.checks import numeric_labels
from kerascompress.data.samples import as_list
from kerascompress.errors import DataError

CLASSES, VALUES = "classes", "values"


@dataclasses.dataclass(frozen=True)
class Fidelity:
    """Candidate vs reference outputs over ``n`` samples.

    ``top1_agreement``: share of positions whose arg-max class is the same (for one-unit
    outputs: the same side of 0.5 for values in [0, 1], else of 0); None when no output
    holds class scores. ``accuracy`` and ``reference_accuracy`` are None without labels.
    ``relative_mse``: for outputs that are not class scores, mean squared error against
    the reference divided by the reference's variance (0 = identical; None when every
    output is a class output). A non-finite candidate value counts as a wrong class and
    an infinite error. For several outputs the fields are the worst over outputs and
    ``per_output`` holds each output's own `Fidelity`.
    """

    max_abs_error: float
    mean_abs_error: float
    top1_agreement: Optional[float]
    accuracy: Optional[float]
    n: int
    reference_accuracy: Optional[float] = None
    relative_mse: Optional[float] = None
    per_output: tuple["Fidelity", ...] = ()

    @property
    def accuracy_drop(self) -> Optional[float]:
        """Reference accuracy minus candidate accuracy (positive = worse)."""
        if self.accuracy is None or self.reference_accuracy is None:
            return None
        return self.reference_accuracy - self.accuracy

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["per_output"] = [p.as_dict() for p in self.per_output]
        return d


# --------------------------------------------------------------------------- what an output is


def _units(out: np.ndarray) -> int:
    return int(out.shape[-1]) if out.ndim >= 2 else 1


def _is_probability(out: np.ndarray) -> bool:
    finite = out[np.isfinite(out)]
    return finite.size > 0 and float(finite.min()) >= 0.0 and float(finite.max()) <= 1.0


def _integral(y: np.ndarray) -> bool:
    return y.dtype.kind in "biu" or bool(np.all(y == np.round(y)))


def output_kind(reference: np.ndarray, labels: Optional[Any] = None) -> str:
    """`CLASSES` when ``reference`` holds class scores, else `VALUES`; raises `DataError` for unfit labels.

    With labels: class ids (one per position, within the output's units), one-hot or
    soft-label rows, or 0/1 for a one-unit output mean class scores; other numbers are
    target values. Without labels: several units on the last axis are class scores (or
    logits); one unit is a class probability when it stays within [0, 1], else a value.
    """
    ref = np.asarray(reference)
    units = _units(ref)
    if labels is None:
        return CLASSES if units > 1 or _is_probability(ref) else VALUES
    y = numeric_labels(labels)
    n = len(ref)
    if len(y) != n:
        raise DataError(f"{len(y)} labels for {n} outputs; they must match")
    if units > 1 and y.shape == ref.shape:  # one row per position, one entry per unit
        rows_are_distributions = bool((y >= 0).all()) and np.allclose(y.sum(-1), 1.0, atol=1e-3)
        return CLASSES if rows_are_distributions else VALUES
    if units > 1 and y.shape in (ref.shape[:-1], ref.shape[:-1] + (1,)):
        if not _integral(y):
            raise DataError(
                f"labels hold non-integer values, but they are shaped as class ids for an output with {units} class "
                f"units: give integer class ids, one-hot rows of width {units}, or targets shaped like the output"
            )
        check_class_ids(y, units)
        return CLASSES
    if units == 1 and y.size == ref.size:
        values = np.unique(y)
        if _integral(y) and set(values.tolist()) <= {0, 1}:
            return CLASSES
        if _is_probability(ref) and _integral(y):
            raise DataError(
                f"the output is one unit in [0, 1] (a binary classifier), but the labels hold "
                f"{values[:5].tolist()}{'...' if len(values) > 5 else ''}; give 0/1 labels, or a regression model "
                f"with an unbounded output"
            )
        return VALUES
    raise DataError(
        f"labels shaped {y.shape[1:]} per sample do not fit an output shaped {ref.shape[1:]} per sample: give "
        f"one class id per {'sample' if ref.ndim <= 2 else 'position'} (shaped {ref.shape[1:-1]}), one-hot rows "
        f"shaped {ref.shape[1:]}, or target values shaped like the output"
    )


def check_class_ids(labels: np.ndarray, units: int) -> None:
    """Class ids must lie in 0..units-1, else a `DataError` naming the range found."""
    lo, hi = int(np.min(labels)), int(np.max(labels))
    if lo < 0 or hi >= units:
        raise DataError(
            f"labels hold class ids from {lo} to {hi}, but the output has {units} units (classes 0 to "
            f"{units - 1}); encode the labels as 0..{units - 1} in the order of the model's outputs, or check "
            f"that this model belongs to this data"
        )


# --------------------------------------------------------------------------- measures


def _classes(out: np.ndarray, binary_threshold: float) -> np.ndarray:
    """Class per position (last axis); -1 where the output is not finite (counts as wrong)."""
    out = out.reshape(len(out), 1) if out.ndim == 1 else out
    finite = np.isfinite(out).all(axis=-1)
    if out.shape[-1] == 1:
        classes = (out[..., 0] > binary_threshold).astype(np.int64)
    else:
        classes = np.argmax(np.where(np.isfinite(out), out, -np.inf), axis=-1)
    return np.where(finite, classes, -1)


def _label_classes(labels: np.ndarray, out: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    shape = out.shape if out.ndim >= 2 else (len(out), 1)
    if shape[-1] > 1 and labels.shape == shape:
        return np.argmax(labels, axis=-1)  # one-hot or soft labels
    return labels.reshape(shape[:-1]).astype(np.int64)


def relative_mse(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Mean squared error over the reference's variance (about each unit's mean); inf if not finite."""
    r = np.asarray(reference, np.float64)
    c = np.asarray(candidate, np.float64)
    if not np.isfinite(c).all():
        return float("inf")
    err = float(np.sum((c - r) ** 2))
    centred = r - r.reshape(len(r), -1).mean(axis=0).reshape(r.shape[1:]) if len(r) > 1 else r
    scale = float(np.sum(centred**2)) or float(np.sum(r**2))
    if scale == 0.0:
        return 0.0 if err == 0.0 else float("inf")
    return err / scale


def _one(ref: np.ndarray, cand: np.ndarray, labels: Optional[np.ndarray]) -> Fidelity:
    if ref.shape != cand.shape:
        raise DataError(f"reference output has shape {ref.shape} but the candidate's is {cand.shape}")
    n = len(ref)
    if n == 0:
        raise DataError("no samples to compare")
    r = ref.astype(np.float64)
    c = cand.astype(np.float64)
    if not np.isfinite(r).all():
        bad = int((~np.isfinite(r)).reshape(n, -1).any(axis=1).sum())
        raise DataError(
            f"the original model's outputs are NaN/Inf on {bad} of {n} samples, so nothing can be compared with "
            f"them; check the model's weights and that the data is scaled as in training"
        )
    diff = np.where(np.isfinite(c), np.abs(r - c), np.inf)
    kind = output_kind(r, labels)
    if kind == VALUES:
        return Fidelity(float(diff.max()), float(diff.mean()), None, None, n, relative_mse=relative_mse(r, c))
    threshold = 0.5 if _is_probability(r) else 0.0
    rc, cc = _classes(r, threshold), _classes(c, threshold)
    acc = ref_acc = None
    if labels is not None:
        y = _label_classes(labels, r)
        acc, ref_acc = float(np.mean(cc == y)), float(np.mean(rc == y))
    return Fidelity(float(diff.max()), float(diff.mean()), float(np.mean(rc == cc)), acc, n, ref_acc)


def correct_per_sample(outputs: Any, labels: Any, reference: Any = None) -> Optional[np.ndarray]:
    """Per sample, the share of its positions classified right (first output), or None for value outputs.

    Right means the label's class, or without labels the ``reference`` output's class
    (top-1 agreement), so two candidates can be compared paired on the same samples.
    A classifier gives 0 or 1 per sample; a per-pixel classifier the share of its pixels.
    """
    if labels is None and reference is None:
        raise DataError("per-sample correctness needs labels or reference outputs")
    out = np.asarray(as_list(outputs)[0], np.float64)
    ref = np.asarray(as_list(outputs if reference is None else reference)[0], np.float64)
    first = labels_per_output(labels, len(as_list(outputs)))[0] if labels is not None else None
    if output_kind(ref, first) == VALUES:
        return None
    threshold = 0.5 if _is_probability(ref) else 0.0
    truth = _label_classes(first, ref) if first is not None else _classes(ref, threshold)
    hits = _classes(out, threshold) == truth
    return hits.reshape(len(hits), -1).mean(axis=1)


def _worst(values: list[Optional[float]], pick: Any) -> Optional[float]:
    present = [v for v in values if v is not None]
    return pick(present) if present else None


def compare_outputs(reference: Any, candidate: Any, labels: Any = None) -> Fidelity:
    """Compare candidate outputs with reference outputs (arrays, or lists for several outputs).

    ``labels``: class ids, one-hot rows or target values; for several outputs a list
    with one entry per output (None where an output has no labels) or a single array
    used for the first output.
    """
    refs, cands = [np.asarray(v) for v in as_list(reference)], [np.asarray(v) for v in as_list(candidate)]
    if len(refs) != len(cands):
        raise DataError(f"reference has {len(refs)} outputs but the candidate has {len(cands)}")
    label_list = labels_per_output(labels, len(refs))
    parts = [_one(r, c, y) for r, c, y in zip(refs, cands, label_list)]
    if len(parts) == 1:
        return parts[0]
    return Fidelity(
        max_abs_error=max(p.max_abs_error for p in parts),
        mean_abs_error=max(p.mean_abs_error for p in parts),
        top1_agreement=_worst([p.top1_agreement for p in parts], min),
        accuracy=_worst([p.accuracy for p in parts], min),
        n=parts[0].n,
        reference_accuracy=_worst([p.reference_accuracy for p in parts], min),
        relative_mse=_worst([p.relative_mse for p in parts], max),
        per_output=tuple(parts),
    )


def labels_per_output(labels: Any, n_outputs: int) -> list[Optional[np.ndarray]]:
    """One label array (or None) per output: a list/tuple/dict gives one per output, an array labels the first."""
    if labels is None:
        return [None] * n_outputs
    if isinstance(labels, dict) and n_outputs > 1:
        labels = list(labels.values())
    if isinstance(labels, (list, tuple)) and n_outputs > 1:
        if len(labels) != n_outputs:
            raise DataError(
                f"{len(labels)} label arrays for {n_outputs} outputs; give one per output (None to skip one)"
            )
        return [None if y is None else np.asarray(y) for y in labels]
    return [np.asarray(labels)] + [None] * (n_outputs - 1)
