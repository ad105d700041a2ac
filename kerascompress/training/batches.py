"""Training data as a replayable sequence of global batches, epoch by epoch.

Nothing here concatenates a data set into memory: arrays are served batch by batch,
and a `Stream` (a tf.data.Dataset, a callable of batches) is read afresh each epoch. The
batches are GLOBAL batches: a strategy splits each one across its replicas.

Determinism on resume: epoch ``e`` must yield the same batches whether the run is fresh
or resumed, so that skipping the ``k`` batches already trained on lands on the right one.
Arrays get a permutation seeded by ``(seed, e)``; a stream is replayed from its start
(a stream that should change order per epoch is given as a callable ``data(epoch)``).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Iterator, Optional

import numpy as np

from kerascompress.data.bundle import DataBundle
from kerascompress.data.stream import Stream, first_leaf, is_stream, n_rows
from kerascompress.errors import DataError

#: Global batch size when the data does not come batched and the caller gives none.
DEFAULT_BATCH_SIZE = 64
#: Training arrays up to this size are fed as tensors, one shuffled copy per epoch; larger
#: ones through a generator (no second copy, but Python runs in tf.data's threads).
_TENSOR_SLICES_BYTES = 1 << 30


class Batches:
    """Global batches of one run's training data (see the module docstring).

    ``make(epoch)`` returns a Dataset of elements ``(x,)`` or ``(x, y)``: batches of
    ``batch_size`` when ``batched``, else single examples batched here.
    """

    def __init__(self, make: Callable[[int], Any], batched: bool, has_labels: bool,
                 samples: Callable[[int], tuple[Any, Optional[Any]]], batch_size: Optional[int],
                 num_examples: Optional[int] = None, max_batches: Optional[int] = None) -> None:
        self._make = make
        self.batched = batched
        self.has_labels = has_labels
        self.samples = samples
        self.batch_size = batch_size
        self.num_examples = num_examples
        self.max_batches = max_batches

    def steps_per_epoch(self, max_steps: Optional[int] = None) -> Optional[int]:
        """Global batches in an epoch, when known (arrays, or a cap), else None."""
        caps = [c for c in (max_steps, self.max_batches) if c]
        if self.num_examples is None:
            return min(caps) if caps else None
        steps = -(-self.num_examples // (self.batch_size or DEFAULT_BATCH_SIZE))
        return min([steps] + caps)

    def epoch(self, epoch: int, skip_batches: int = 0, min_batch: int = 1,
              max_steps: Optional[int] = None) -> Any:
        """The global batches of ``epoch`` after the first ``skip_batches`` (already trained on).

        ``min_batch``: a trailing batch smaller than this is dropped (with N replicas a batch
        of fewer than N examples would leave a replica nothing to normalise).
        """
        import tensorflow as tf

        ds = self._make(epoch)
        if not self.batched:
            ds = ds.batch(self.batch_size or DEFAULT_BATCH_SIZE)
        elif self.batch_size is not None:
            ds = ds.rebatch(self.batch_size)
        if min_batch > 1:
            ds = ds.filter(lambda *el: tf.shape(first_leaf(el[0]))[0] >= min_batch)
        cap = min([c for c in (max_steps, self.max_batches) if c], default=None)
        if cap:
            ds = ds.take(cap)
        if skip_batches:
            ds = ds.skip(skip_batches)
        options = tf.data.Options()
        # DATA sharding splits every global batch across workers, so N workers see exactly
        # the batches one device would; FILE sharding would change what a batch holds.
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        options.deterministic = True
        return ds.with_options(options).prefetch(2)


def _take_rows(x: Any, idx: np.ndarray) -> Any:
    import tensorflow as tf

    return tf.nest.map_structure(lambda a: np.asarray(a)[idx], x)


def _from_arrays(x: Any, y: Optional[Any], seed: int, batch_size: Optional[int], max_samples: Optional[int],
                 input_rank: int) -> Batches:
    import tensorflow as tf

    if np.ndim(first_leaf(x)) != input_rank:
        raise DataError(f"training inputs have rank {np.ndim(first_leaf(x))} but the model takes rank {input_rank}: "
                        f"arrays must hold a batch of examples (first axis = examples)")
    n = n_rows(x)
    if y is not None and n_rows(y) != n:
        raise DataError(f"`data` has {n} inputs but {n_rows(y)} labels; they must match")
    if max_samples:
        n = min(n, int(max_samples))
    if n == 0:
        raise DataError("fine-tuning data is empty")
    bs = batch_size or DEFAULT_BATCH_SIZE
    parts = (x,) if y is None else (x, y)
    signature = tuple(tf.nest.map_structure(
        lambda a: tf.TensorSpec((None,) + np.shape(a)[1:], tf.as_dtype(np.asarray(a[:1]).dtype)), p) for p in parts)

    total = n_rows(x)

    def epoch_order(epoch: int) -> np.ndarray:
        """This epoch's examples, batch by batch: a shuffle of all rows (the first ``n`` of it), each batch sorted."""
        order = np.random.default_rng([seed, epoch]).permutation(total)[:n]
        # sorted within a batch: contiguous reads; the order within a batch is irrelevant
        return np.concatenate([np.sort(order[start:start + bs]) for start in range(0, n, bs)])

    def batches(epoch: int) -> Iterator[tuple]:
        order = epoch_order(epoch)
        for start in range(0, n, bs):
            yield tuple(_take_rows(p, order[start:start + bs]) for p in parts)

    in_memory = sum(np.asarray(a).nbytes for p in parts for a in tf.nest.flatten(p)) <= _TENSOR_SLICES_BYTES

    def make(epoch: int) -> Any:
        if in_memory:  # no Python in TensorFlow's threads (from_generator's py_func): the epoch's rows as tensors
            rows = tuple(_take_rows(p, epoch_order(epoch)) for p in parts)
            return tf.data.Dataset.from_tensor_slices(rows).batch(bs)
        return tf.data.Dataset.from_generator(lambda: batches(epoch), output_signature=signature)

    def samples(k: int) -> tuple[Any, Optional[Any]]:
        idx = np.arange(min(k, n))
        return _take_rows(x, idx), None if y is None else _take_rows(y, idx)

    return Batches(make, True, y is not None, samples, bs, num_examples=n)


def _from_stream(stream: Stream, batch_size: Optional[int], max_samples: Optional[int]) -> Batches:
    max_batches = None
    if max_samples:
        per_batch = batch_size or (stream.first_batch_size() if stream.batched else DEFAULT_BATCH_SIZE)
        max_batches = max(1, math.ceil(int(max_samples) / per_batch))
    return Batches(stream.dataset, stream.batched, stream.has_labels, stream.head, batch_size,
                   max_batches=max_batches)


def as_batches(data: Any, model: Any, *, seed: int = 0, batch_size: Optional[int] = None,
               max_samples: Optional[int] = None) -> Batches:
    """Any supported training ``data`` as `Batches` for ``model``.

    ``data``: a `DataBundle` (its training part), ``(x, y)`` or ``x`` arrays (lists or
    dicts of arrays for several inputs), a tf.data.Dataset (batched or not, elements
    ``(x, y)``, ``(x,)`` or ``x``), a callable returning a Dataset or an iterator of
    batches per epoch (with the epoch number when it takes an argument), or a generator
    object (one epoch). ``max_samples``: at most that many examples per epoch (arrays:
    the first ones; streams: the batches holding them).
    """
    if data is None:
        raise DataError("fine-tuning needs data: pass (x, y) arrays, a tf.data.Dataset, a callable of batches, "
                        "or a DataBundle")
    input_rank = _input_rank(model)
    if isinstance(data, DataBundle):
        data = data.training_data
    if isinstance(data, Stream) or is_stream(data):
        return _from_stream(Stream.of(data, input_rank), batch_size, max_samples)
    if isinstance(data, tuple) and len(data) == 2:
        return _from_arrays(data[0], data[1], seed, batch_size, max_samples, input_rank)
    if isinstance(data, (np.ndarray, list, dict)):
        return _from_arrays(data, None, seed, batch_size, max_samples, input_rank)
    raise DataError(f"unsupported `data` of type {type(data).__name__}: give (x, y) arrays, a tf.data.Dataset, "
                    f"or a callable/generator yielding batches")


def _input_rank(model: Any) -> int:
    try:
        return len(model.inputs[0].shape)
    except (AttributeError, IndexError, TypeError, ValueError) as exc:
        raise DataError("the model must be built (have inputs) before fine-tuning") from exc
