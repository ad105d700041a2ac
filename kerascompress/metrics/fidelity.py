"""How closely an artifact's outputs follow the Keras model's, and what that costs in accuracy.

Accuracy needs labels; fidelity (errors and top-1 agreement) does not, so a model can be
checked on unlabeled data too. Both are reported per output and as the worst case over
outputs, because one bad head should fail a multi-output model.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional, Sequence

import numpy as np

from kerascompress.data.samples import as_list
from kerascompress.errors import DataError


@dataclasses.dataclass(frozen=True)
class Fidelity:
    """Candidate vs reference outputs over ``n`` samples.

    ``top1_agreement``: share of samples whose arg-max class is the same (for one-unit
    outputs: the same side of 0.5 for values in [0, 1], else of 0). ``accuracy`` and
    ``reference_accuracy`` are None without labels. For several outputs the fields are
    the worst over outputs and ``per_output`` holds each output's own `Fidelity`.
    """

    max_abs_error: float
    mean_abs_error: float
    top1_agreement: float
    accuracy: Optional[float]
    n: int
    reference_accuracy: Optional[float] = None
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



def _classes(out: np.ndarray, binary_threshold: float) -> np.ndarray:
    flat = out.reshape(len(out), -1) if out.ndim != 2 else out
    if flat.shape[1] == 1:
        return (flat[:, 0] > binary_threshold).astype(np.int64)
    return np.argmax(flat, axis=1)


def _label_classes(labels: np.ndarray, out: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    n_units = int(np.prod(out.shape[1:])) if out.ndim > 1 else 1
    if labels.ndim >= 2 and labels.shape[-1] == n_units and n_units > 1:
        return np.argmax(labels.reshape(len(labels), -1), axis=1)  # one-hot or soft labels
    return labels.reshape(len(labels)).astype(np.int64)


def _one(ref: np.ndarray, cand: np.ndarray, labels: Optional[np.ndarray]) -> Fidelity:
    if ref.shape != cand.shape:
        raise DataError(f"reference output has shape {ref.shape} but the candidate's is {cand.shape}")
    n = len(ref)
    if n == 0:
        raise DataError("no samples to compare")
    r = ref.astype(np.float64)
    c = cand.astype(np.float64)
    diff = np.abs(r - c)
    threshold = 0.5 if (r.min() >= 0.0 and r.max() <= 1.0) else 0.0
    rc, cc = _classes(r, threshold), _classes(c, threshold)
    acc = ref_acc = None
    if labels is not None:
        if len(labels) != n:
            raise DataError(f"{len(labels)} labels for {n} outputs; they must match")
        y = _label_classes(labels, r)
        acc, ref_acc = float(np.mean(cc == y)), float(np.mean(rc == y))
    return Fidelity(float(diff.max()), float(diff.mean()), float(np.mean(rc == cc)), acc, n, ref_acc)


def correct_per_sample(outputs: Any, labels: Any, reference: Any = None) -> np.ndarray:
    """Whether each sample's predicted class is right (first output that has labels).

    Without labels, "right" means agreeing with ``reference`` outputs (top-1), so two
    candidates can still be compared paired against the original model.
    """
    outs = [np.asarray(v) for v in as_list(outputs)]
    out = outs[0].astype(np.float64)
    if labels is None:
        if reference is None:
            raise DataError("per-sample correctness needs labels or reference outputs")
        ref = np.asarray(as_list(reference)[0]).astype(np.float64)
        threshold = 0.5 if (ref.min() >= 0.0 and ref.max() <= 1.0) else 0.0
        return _classes(out, threshold) == _classes(ref, threshold)
    y = np.asarray(labels[0] if isinstance(labels, (list, tuple)) and len(outs) > 1 else labels)
    if len(y) != len(out):
        raise DataError(f"{len(y)} labels for {len(out)} outputs; they must match")
    threshold = 0.5 if (out.min() >= 0.0 and out.max() <= 1.0) else 0.0
    return _classes(out, threshold) == _label_classes(y, out)


def compare_outputs(reference: Any, candidate: Any, labels: Any = None) -> Fidelity:
    """Compare candidate outputs with reference outputs (arrays, or lists for several outputs).

    ``labels``: integer class ids or one-hot rows; for several outputs a list with one
    entry per output (None where an output has no labels) or a single array used for
    the first output.
    """
    refs, cands = [np.asarray(v) for v in as_list(reference)], [np.asarray(v) for v in as_list(candidate)]
    if len(refs) != len(cands):
        raise DataError(f"reference has {len(refs)} outputs but the candidate has {len(cands)}")
    if labels is None:
        label_list: Sequence[Optional[np.ndarray]] = [None] * len(refs)
    elif isinstance(labels, (list, tuple)) and len(refs) > 1:
        label_list = [None if y is None else np.asarray(y) for y in labels]
        if len(label_list) != len(refs):
            raise DataError(f"{len(label_list)} label arrays for {len(refs)} outputs")
    else:
        label_list = [np.asarray(labels)] + [None] * (len(refs) - 1)
    parts = [_one(r, c, y) for r, c, y in zip(refs, cands, label_list)]
    if len(parts) == 1:
        return parts[0]
    accs = [p.accuracy for p in parts if p.accuracy is not None]
    ref_accs = [p.reference_accuracy for p in parts if p.reference_accuracy is not None]
    return Fidelity(
        max_abs_error=max(p.max_abs_error for p in parts),
        mean_abs_error=max(p.mean_abs_error for p in parts),
        top1_agreement=min(p.top1_agreement for p in parts),
        accuracy=min(accs) if accs else None,
        n=parts[0].n,
        reference_accuracy=min(ref_accs) if ref_accs else None,
        per_output=tuple(parts),
    )
