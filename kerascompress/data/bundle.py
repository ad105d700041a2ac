"""Turn the user's ``data`` and ``validation_data`` into calibration, fine-tuning and validation parts.

``optimize`` accepts an ``(x, y)`` pair of arrays, ``x`` alone, a ``tf.data.Dataset``,
or a callable returning a Dataset or batches per epoch. Passes need different slices of
it (a few hundred calibration samples, a training set for fine-tuning, samples to
choose between candidates) and the driver needs validation data for its verdicts,
which must never be trained or calibrated on. As in ``keras.Model.fit``,
``validation_data`` given by the caller is the validation part; without it a split of
``data`` is, and the report warns that the original model may have been trained on
those samples (a memorised baseline makes any budget look unreachable).

A Dataset or a callable stays a `Stream` (never loaded whole): fine-tuning reads it
epoch by epoch, and the bundle holds only its first examples as arrays for the passes
that need arrays. A stream that turns out to be small is loaded and split like arrays.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional, Sequence

import numpy as np

from kerascompress.data.checks import as_array, check_inputs, check_part
from kerascompress.data.samples import as_list, n_samples, slice_samples, take
from kerascompress.data.stream import Stream, concat_batches, is_stream, n_rows, stack_rows
from kerascompress.errors import DataError

__all__ = ["DataBundle", "HEAD_SAMPLES", "check_bundle", "check_inputs", "make_bundle"]

#: Examples of a streamed training part held as arrays: calibration, probes, choosing between candidates.
HEAD_SAMPLES = 2048


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
    #: The whole training part when ``data`` was a stream (a tf.data.Dataset, a callable of
    #: batches): fine-tuning reads it epoch by epoch, and ``x_train``/``y_train`` then hold
    #: only its first `HEAD_SAMPLES` examples, for the passes that need arrays.
    train_stream: Optional[Stream] = None
    #: What the report should say about how the data was taken (e.g. a stream's held-out part).
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def training_data(self) -> Any:
        """What fine-tuning reads: the training stream, or the training arrays ``(x, y)``."""
        return self.train_stream if self.train_stream is not None else (self.x_train, self.y_train)

    @property
    def independent_validation(self) -> bool:
        """True when the validation part is the caller's ``validation_data``."""
        return self.validation_source == "validation_data"

    @property
    def has_labels(self) -> bool:
        return self.y_eval is not None

    @property
    def can_train(self) -> bool:
        return self.y_train is not None and (self.train_stream is not None or n_samples(self.x_train) > 0)

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
    """(x, y) from a tuple, or bare inputs, checked to be numeric arrays (streams are handled by `Stream`)."""
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


def _stream(data: Any, input_rank: Optional[int], what: str) -> Stream:
    stream = Stream.of(data, input_rank)
    if stream.single_pass:
        raise DataError(f"`{what}` is a generator object, which can be read only once, but optimize reads its data "
                        f"several times (calibration, each fine-tuning): pass a callable that returns a new "
                        f"generator, or a tf.data.Dataset")
    return stream


def _read(stream: Stream, examples: int) -> tuple[list, list[int]]:
    """The leading elements holding at least ``examples`` examples (fewer if the stream ends), and their sizes."""
    import tensorflow as tf

    elements, sizes = [], []
    ds = stream.dataset(0)
    if not stream.batched:
        ds = ds.batch(256)  # read in chunks; sizes are then re-cut per example below
    total = 0
    for element in ds.as_numpy_iterator():
        elements.append(element)
        sizes.append(n_rows(element[0]))
        total += sizes[-1]
        if total >= examples:
            break
    if not stream.batched and elements:  # back to single examples
        rows = [tuple(tf.nest.map_structure(lambda a, i=i: a[i], part) for part in e)
                for e in elements for i in range(n_rows(e[0]))]
        return rows[:examples], [1] * min(examples, len(rows))
    return elements, sizes


def _arrays_of(elements: list, batched: bool) -> tuple[Any, Optional[Any]]:
    join = concat_batches if batched else stack_rows
    x = join([e[0] for e in elements])
    y = join([e[1] for e in elements]) if len(elements[0]) > 1 else None
    return x, y


def _validation_arrays(data: Any, input_rank: Optional[int], max_eval: int,
                       notes: list[str]) -> tuple[Any, Optional[Any]]:
    """The caller's validation data as arrays; a stream is read up to ``max_eval`` examples."""
    if not is_stream(data):
        return _as_arrays(data)
    stream = _stream(data, input_rank, "validation_data")
    elements, sizes = _read(stream, max_eval + 1)
    if not elements:
        raise DataError("`validation_data` is empty; give at least a few hundred samples")
    x, y = _arrays_of(elements, stream.batched)
    if sum(sizes) > max_eval:
        notes.append(f"validation_data is a stream: its first {max_eval} examples are the validation set")
        x = take(x, max_eval)
        y = None if y is None else take(y, max_eval)
    return x, y


def _split_stream(stream: Stream, eval_fraction: float, calibration_samples: int, seed: int, max_eval: int,
                  head_samples: int) -> DataBundle:
    """Hold out the stream's first examples for validation; train on the rest, read as a stream.

    A stream that ends within those examples is small: it is loaded and split at random
    like arrays. Holding out the first examples needs a stream that replays the same
    order on every reading, which is checked.
    """
    count = stream.cardinality()
    n_eval = max_eval
    if count is not None and not stream.batched:
        n_eval = min(max_eval, max(1, int(round(count * eval_fraction))))
    elements, sizes = _read(stream, n_eval + head_samples)
    if not elements:
        raise DataError("the dataset or stream passed as `data` is empty")
    if sum(sizes) < n_eval + head_samples:  # the whole stream is small: split it like arrays
        x, y = _arrays_of(elements, stream.batched)
        return _split_arrays(x, y, eval_fraction, calibration_samples, seed, max_eval)
    held = int(np.searchsorted(np.cumsum(sizes), n_eval) + 1)  # whole elements (batches) covering n_eval examples
    again = stream.leading(min(held, 8))
    if not all(_same(a, b) for a, b in zip(again, elements)):
        raise DataError(
            "`data` yields its elements in a different order each time it is read (e.g. Dataset.shuffle with "
            "reshuffle_each_iteration), so a held-out part of it would be trained on: pass "
            "validation_data=(x_val, y_val), or shuffle with a fixed seed and reshuffle_each_iteration=False"
        )
    x_eval, y_eval = _arrays_of(elements[:held], stream.batched)
    train = stream.after(held)
    x_head, y_head = _arrays_of(elements[held:], stream.batched) if held < len(elements) else train.head(head_samples)
    note = (f"validation data: the first {n_rows(x_eval)} examples of the `data` stream are held out (never trained "
            f"on); the rest is read as a stream for fine-tuning")
    return DataBundle(x_head, y_head, x_eval, y_eval, calibration_samples, "split", train_stream=train, notes=[note])


def _same(a: Any, b: Any) -> bool:
    import tensorflow as tf

    left, right = tf.nest.flatten(a), tf.nest.flatten(b)
    return len(left) == len(right) and all(np.array_equal(u, v) for u, v in zip(left, right))


def make_bundle(
    data: Any,
    validation_data: Any = None,
    eval_fraction: float = 0.2,
    calibration_samples: int = 256,
    seed: int = 0,
    max_eval: int = 10000,
    input_shapes: Optional[Sequence[tuple]] = None,
    head_samples: int = HEAD_SAMPLES,
) -> DataBundle:
    """The pipeline's data: ``data`` for training and calibration, ``validation_data`` for verdicts.

    Without ``validation_data`` a shuffled (``seed``) split of ``data`` is held out for
    validation (``eval_fraction`` of it, at most ``max_eval`` samples) and the bundle
    says so (``validation_source == "split"``). ``data`` may also be a `DataBundle`
    (returned as is) or a dict with keys ``train`` and ``eval`` holding (x, y) tuples,
    for users who split themselves.

    A stream (tf.data.Dataset, callable) stays a stream for training (`DataBundle.train_stream`)
    and only its first ``head_samples`` examples are held as arrays; without
    ``validation_data`` its first examples (``max_eval``, or ``eval_fraction`` of a known
    length) are held out. A stream given as ``validation_data`` is read up to ``max_eval``
    examples. ``input_shapes`` (the model's) decides whether stream elements are batches.
    """
    if isinstance(data, DataBundle):
        if validation_data is not None:
            raise DataError("give validation_data or a DataBundle holding its own validation part, not both")
        return check_bundle(data)
    if isinstance(data, dict) and set(data) >= {"train", "eval"}:
        if validation_data is not None:
            raise DataError("give validation_data or data={'train': ..., 'eval': ...}, not both")
        data, validation_data = data["train"], data["eval"]
    input_rank = len(input_shapes[0]) if input_shapes else None
    if validation_data is not None:
        notes: list[str] = []
        xv, yv = _validation_arrays(validation_data, input_rank, max_eval, notes)
        if n_samples(xv) == 0:
            raise DataError("`validation_data` is empty; give at least a few hundred samples")
        stream = _stream(data, input_rank, "data") if data is not None and is_stream(data) else None
        if stream is not None:
            xt, yt = stream.head(head_samples)
            if stream.has_labels and yv is None:
                raise DataError("`data` has labels but `validation_data` has none; give (x_val, y_val)")
            return check_bundle(DataBundle(xt, yt, xv, yv, calibration_samples, "validation_data",
                                           train_stream=stream, notes=notes))
        xt, yt = _as_arrays(data) if data is not None else (None, None)
        if xt is None:
            xt = take(xv, 0)
        if yt is not None and yv is None:
            raise DataError("`data` has labels but `validation_data` has none; give (x_val, y_val)")
        return check_bundle(DataBundle(xt, yt, xv, yv, calibration_samples, "validation_data", notes=notes))
    if is_stream(data):
        return check_bundle(_split_stream(_stream(data, input_rank, "data"), eval_fraction, calibration_samples,
                                          seed, max_eval, head_samples))
    x, y = _as_arrays(data)
    check_part(x, y, "`data`")
    return check_bundle(_split_arrays(x, y, eval_fraction, calibration_samples, seed, max_eval))


def _split_arrays(x: Any, y: Optional[Any], eval_fraction: float, calibration_samples: int, seed: int,
                  max_eval: int) -> DataBundle:
    """A shuffled (``seed``) split: ``eval_fraction`` of the samples (at most ``max_eval``) held out."""
    n = n_samples(x)
    if n < 2:
        raise DataError(f"`data` has {n} samples; give at least a few hundred for calibration and evaluation")
    if y is not None and len(y) != n:
        raise DataError(f"`data` has {n} inputs but {len(y)} labels; they must match")
    y = None if y is None else np.asarray(y)
    order = np.random.default_rng(seed).permutation(n)
    n_eval = min(max_eval, max(1, int(round(n * eval_fraction))))
    ev, tr = order[:n_eval], order[n_eval:]
    pick = lambda a, idx: ([v[idx] for v in a] if isinstance(a, (list, tuple)) else  # noqa: E731
                           {k: v[idx] for k, v in a.items()} if isinstance(a, dict) else np.asarray(a)[idx])
    return DataBundle(
        pick(x, tr), None if y is None else y[tr], pick(x, ev), None if y is None else y[ev], calibration_samples,
        "split",
    )


def check_bundle(bundle: DataBundle) -> DataBundle:
    """The held-out part must hold samples; the parts held as arrays must hold sane values (`data.checks`)."""
    check_part(bundle.x_train, bundle.y_train, "the training part of `data`", allow_empty=True)
    where = "`validation_data`" if bundle.independent_validation else "the held-out part of `data`"
    check_part(bundle.x_eval, bundle.y_eval, where)
    return bundle
