"""Turn the user's ``data`` and ``validation_data`` into calibration, fine-tuning and validation parts.

``optimize`` accepts a ``tf.data.Dataset``, an ``(x, y)`` pair of arrays, or ``x``
alone. Passes need different slices of it (a few hundred calibration samples, a
training set for fine-tuning, samples to choose between candidates) and the driver
needs validation data for its verdicts, which must never be trained or calibrated on.
As in ``keras.Model.fit``, ``validation_data`` given by the caller is the validation
part; without it a split of ``data`` is, and the report warns that the original model
may have been trained on those samples (a memorised baseline makes any budget look
unreachable).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

import numpy as np

from kerascompress.data.checks import as_array, check_inputs, check_part
from kerascompress.data.samples import as_list, n_samples, slice_samples, take
from kerascompress.errors import DataError

__all__ = ["DataBundle", "check_bundle", "check_inputs", "make_bundle"]


@dataclasses.dataclass
class DataBundle:
    """Data split for the pipeline. ``y`` arrays are None when no labels were given."""

    x_train: Any
    y_train: Optional[np.ndarray]
    x_eval: Any
    y_eval: Optional[np.ndarray]
    calibration_samples: int = 256
    #: "validation_data": the caller's own validation data; "split": taken from ``data``.
    validation_source: str = "validation_data"

    @property
    def independent_validation(self) -> bool:
        """True when the validation part is the caller's ``validation_data``."""
        return self.validation_source == "validation_data"

    @property
    def has_labels(self) -> bool:
        return self.y_eval is not None

    @property
    def can_train(self) -> bool:
        return self.y_train is not None and n_samples(self.x_train) > 0

    def calibration(self, n: Optional[int] = None) -> Any:
        """The first ``n`` training inputs (default ``calibration_samples``).

        Only a split without training samples falls back to its validation part; the
        caller's ``validation_data`` is never calibrated on.
        """
        n = n or self.calibration_samples
        if n_samples(self.x_train) or self.independent_validation:
            return take(self.x_train, n)
        return take(self.x_eval, n)

    def selection(self, n: int) -> tuple[Any, Optional[np.ndarray]]:
        """Up to ``n`` samples a pass may use to choose between candidates.

        They come from the training part, after the calibration samples, so the held-out
        part the driver judges the pass on is never used to select: a pass tuned on it
        would look better than it is. Only when the training part is too small (under
        100 samples past calibration) does it fall back: to the whole training part, or,
        for a split without training samples, to its held-out part.
        """
        skip = self.calibration_samples
        total = n_samples(self.x_train)
        if total >= skip + 100:
            end = min(total, skip + n)
            return slice_samples(self.x_train, skip, end), None if self.y_train is None else self.y_train[skip:end]
        if self.independent_validation:
            return take(self.x_train, n), None if self.y_train is None else self.y_train[:n]
        return take(self.x_eval, n), None if self.y_eval is None else self.y_eval[:n]


def _as_arrays(data: Any) -> tuple[Any, Optional[np.ndarray]]:
    """(x, y) numpy from a Dataset, a tuple, or bare inputs."""
    try:
        import tensorflow as tf

        is_dataset = isinstance(data, tf.data.Dataset)
    except ImportError:  # pragma: no cover - tensorflow is a hard dependency
        is_dataset = False
    if is_dataset:
        return _dataset_arrays(data)
    if isinstance(data, tuple) and len(data) == 2:
        x, y = data
        if isinstance(y, (list, tuple, dict)) and any(np.ndim(v) > 0 for v in as_list(y)):
            raise DataError(
                "labels for several outputs (a list or dict of arrays) are not taken here: pass the labels of the "
                "first output as one array, or data=x alone to judge every output against the original model"
            )
        return _inputs(x), None if y is None else as_array(y, "`data` labels")
    if isinstance(data, (np.ndarray, list, dict)) or hasattr(data, "__array__"):
        return _inputs(data), None
    what = f"a tuple of {len(data)}" if isinstance(data, tuple) else type(data).__name__
    raise DataError(
        f"`data` must be a tf.data.Dataset, an (x, y) tuple of arrays or an array of inputs; got {what}"
    )


def _inputs(x: Any) -> Any:
    """Inputs as arrays: one array, a list of arrays (several inputs) or a dict of them."""
    if isinstance(x, dict):
        return {k: as_array(v, f"`data` input {k!r}") for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [as_array(v, f"`data` input {i}") for i, v in enumerate(x)]
    return as_array(x, "`data` inputs")


def _dataset_arrays(data: Any) -> tuple[Any, Optional[np.ndarray]]:
    xs, ys = [], []
    for element in data.as_numpy_iterator():
        if isinstance(element, tuple) and len(element) >= 2:
            xs.append(element[0])
            ys.append(element[1])
        else:
            xs.append(element)
    if not xs:
        raise DataError("the dataset passed as `data` is empty: give at least a few hundred samples")
    if isinstance(xs[0], dict):
        raise DataError("dataset elements with named inputs (dicts) are not read here; pass data=({name: array}, y)")
    try:
        batched = np.ndim(xs[0]) > 0 and len(xs) > 1 and np.shape(xs[0])[1:] == np.shape(xs[-1])[1:]
        x = np.concatenate(xs) if batched else np.stack(xs)
        y = (np.concatenate(ys) if batched else np.stack(ys)) if ys else None
    except ValueError as exc:
        raise DataError(
            f"the dataset's elements do not stack into arrays ({exc}); give equally shaped samples"
        ) from exc
    return x, y


def make_bundle(
    data: Any,
    validation_data: Any = None,
    eval_fraction: float = 0.2,
    calibration_samples: int = 256,
    seed: int = 0,
    max_eval: int = 10000,
) -> DataBundle:
    """The pipeline's data: ``data`` for training and calibration, ``validation_data`` for verdicts.

    Without ``validation_data`` a shuffled (``seed``) split of ``data`` is held out for
    validation (``eval_fraction`` of it, at most ``max_eval`` samples) and the bundle
    says so (``validation_source == "split"``). ``data`` may also be a `DataBundle`
    (returned as is) or a dict with keys ``train`` and ``eval`` holding (x, y) tuples,
    for users who split themselves.
    """
    if isinstance(data, DataBundle):
        if validation_data is not None:
            raise DataError("give validation_data or a DataBundle holding its own validation part, not both")
        check_bundle(data)
        return data
    if isinstance(data, dict) and set(data) >= {"train", "eval"}:
        if validation_data is not None:
            raise DataError("give validation_data or data={'train': ..., 'eval': ...}, not both")
        data, validation_data = data["train"], data["eval"]
    if validation_data is not None:
        xt, yt = _as_arrays(data) if data is not None else (None, None)
        xv, yv = _as_arrays(validation_data)
        if n_samples(xv) == 0:
            raise DataError("`validation_data` is empty; give at least a few hundred samples")
        if xt is None:
            xt = take(xv, 0)
        if yt is not None and yv is None:
            raise DataError("`data` has labels but `validation_data` has none; give (x_val, y_val)")
        bundle = DataBundle(xt, yt, xv, yv, calibration_samples, "validation_data")
        check_bundle(bundle)
        return bundle
    x, y = _as_arrays(data)
    check_part(x, y, "`data`")
    n = n_samples(x)
    if n < 2:
        raise DataError(f"`data` has {n} samples; give at least a few hundred for calibration and evaluation")
    order = np.random.default_rng(seed).permutation(n)
    n_eval = min(max_eval, max(1, int(round(n * eval_fraction))))
    ev, tr = order[:n_eval], order[n_eval:]
    pick = lambda a, idx: ([v[idx] for v in a] if isinstance(a, (list, tuple)) else  # noqa: E731
                           {k: v[idx] for k, v in a.items()} if isinstance(a, dict) else np.asarray(a)[idx])
    return DataBundle(
        pick(x, tr), None if y is None else y[tr], pick(x, ev), None if y is None else y[ev], calibration_samples,
        "split",
    )


def check_bundle(bundle: DataBundle) -> None:
    """The held-out part must hold samples; both parts must hold sane values (`data.checks`)."""
    check_part(bundle.x_train, bundle.y_train, "the training part of `data`", allow_empty=True)
    where = "`validation_data`" if bundle.independent_validation else "the held-out part of `data`"
    check_part(bundle.x_eval, bundle.y_eval, where)
