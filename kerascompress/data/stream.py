"""Training data that is read, not held: a stream replayed from its source every epoch.

A `tf.data.Dataset` over files, or a generator, may hold far more than memory, so such
data stays a `Stream`: fine-tuning reads it epoch by epoch, and only small parts are
ever taken as arrays (`Stream.head`): calibration samples, a probe batch, the samples a
pass chooses between candidates on, a held-out validation part.

Every reading of an epoch must yield the same elements in the same order (a resumed
run skips the batches it has already trained on; a held-out part must stay held out),
so a stream is made from something that can be read again: a Dataset (each iteration
starts over), or a callable returning a Dataset or an iterator of batches, called once
per epoch (with the epoch number when it takes an argument). A generator object can be
read only once: one epoch of `finetune`, never `optimize`.
"""
from __future__ import annotations

import inspect
import itertools
from typing import Any, Callable, Iterator, Optional

import numpy as np

from kerascompress.errors import DataError

#: An element of a stream: ``(x,)`` or ``(x, y)``; x and y may be nested (several inputs).
Element = tuple


def is_stream(data: Any) -> bool:
    """True for data that is read as a stream: a tf.data.Dataset, a callable or an iterator."""
    import tensorflow as tf

    if isinstance(data, tf.data.Dataset) or isinstance(data, Iterator) or inspect.isgenerator(data):
        return True
    return callable(data) and not isinstance(data, (np.ndarray, list, tuple, dict, type))


def split_element(element: Any) -> Element:
    """Keras' convention: a tuple is (x,), (x, y) or (x, y, sample_weight); anything else is x."""
    if isinstance(element, list):
        element = tuple(element)
    if not isinstance(element, tuple):
        return (element,)
    if len(element) == 1 or (len(element) == 2 and element[1] is None):
        return (element[0],)
    if len(element) == 2:
        return element
    if len(element) == 3:
        raise DataError("sample weights are not supported by fine-tuning: give elements (x, y) or x")
    raise DataError(f"a data element must be x, (x,) or (x, y); got a tuple of {len(element)}")


def first_leaf(structure: Any) -> Any:
    """The first array of a possibly nested structure (the first input of a multi-input model)."""
    import tensorflow as tf

    return tf.nest.flatten(structure)[0]


def stack_rows(rows: list) -> Any:
    """Examples (nested structures of arrays) stacked into one batch."""
    import tensorflow as tf

    return tf.nest.map_structure(lambda *a: np.stack(a), *rows)


def concat_batches(batches: list) -> Any:
    import tensorflow as tf

    return tf.nest.map_structure(lambda *a: np.concatenate(a), *batches)


def n_rows(x: Any) -> int:
    return int(np.shape(first_leaf(x))[0])


def is_batched(x_rank: int, input_rank: Optional[int], first_dim_known: bool) -> bool:
    """Whether elements are batches: a batch has the model input's rank, one example one less.

    Without the model's rank, an open first axis (``Dataset.batch``) means batches and a
    fully known shape means single examples.
    """
    if input_rank is None:
        return not first_dim_known
    if x_rank == input_rank:
        return True
    if x_rank == input_rank - 1:
        return False
    raise DataError(f"data elements have rank {x_rank} but the model takes inputs of rank {input_rank} "
                    f"(batches) or {input_rank - 1} (single examples)")


class Stream:
    """Training data read from its source each epoch (see the module docstring).

    ``make(epoch, batched)`` returns a tf.data.Dataset of elements ``(x,)`` or ``(x, y)``,
    single examples or batches (``batched``); ``skip`` leading elements are left out (a
    held-out part). ``single_pass``: a generator object, readable once; ``first`` is the
    element already read from it to learn its shapes (it is not lost: ``make`` yields it).
    """

    def __init__(self, make: Callable[[int, bool], Any], x_rank: int, first_dim_known: bool, has_labels: bool,
                 input_rank: Optional[int] = None, single_pass: bool = False, first: Optional[Element] = None,
                 skip: int = 0) -> None:
        self._make = make
        self.x_rank = x_rank
        self.first_dim_known = first_dim_known
        self.has_labels = has_labels
        self.batched = is_batched(x_rank, input_rank, first_dim_known)
        self.single_pass = single_pass
        self._first = first
        self.skip = skip
        self._read = [False]  # shared by copies: a generator object is one resource

    # ----------------------------------------------------------------- building

    @classmethod
    def of(cls, data: Any, input_rank: Optional[int] = None) -> "Stream":
        """A stream over ``data``: a Dataset, a callable (a Dataset or batches per epoch), or a generator."""
        import tensorflow as tf

        if isinstance(data, Stream):
            return data.for_rank(input_rank)
        if isinstance(data, tf.data.Dataset):
            return _of_datasets(lambda epoch: data, input_rank)
        if isinstance(data, Iterator) or inspect.isgenerator(data):
            try:
                first = next(data)
            except StopIteration:
                raise DataError("the data generator is empty") from None
            return _of_iterators(lambda epoch: itertools.chain([first], data), first, input_rank, single_pass=True)
        if callable(data):
            factory = _per_epoch(data)
            produced = factory(0)
            if isinstance(produced, tf.data.Dataset):
                return _of_datasets(factory, input_rank)
            try:
                first = next(iter(produced))
            except StopIteration:
                raise DataError("the data callable produced no batches") from None
            return _of_iterators(lambda epoch: iter(factory(epoch)), first, input_rank, single_pass=False)
        raise DataError(f"cannot stream `data` of type {type(data).__name__}: give a tf.data.Dataset, a callable "
                        f"returning one (or an iterator of batches), or a generator")

    def for_rank(self, input_rank: Optional[int]) -> "Stream":
        """This stream with batching decided against a model's input rank (exact, unlike the shape heuristic)."""
        if input_rank is None:
            return self
        return self._replace(batched=is_batched(self.x_rank, input_rank, self.first_dim_known))

    def after(self, elements: int) -> "Stream":
        """The stream without its first ``elements`` (examples or batches): what remains after a held-out part."""
        return self._replace(skip=self.skip + elements)

    def _replace(self, **changes: Any) -> "Stream":
        copy = Stream.__new__(Stream)
        copy.__dict__.update(self.__dict__)
        copy.__dict__.update(changes)
        return copy

    # ----------------------------------------------------------------- reading

    def dataset(self, epoch: int = 0) -> Any:
        """The elements of ``epoch`` as a tf.data.Dataset (after the skipped ones)."""
        if self.single_pass:
            if self._read[0]:
                raise DataError("a generator object can be read only once: pass a callable that returns a new "
                                "generator (optionally taking the epoch number) to read the data several times")
            self._read[0] = True
        ds = self._make(epoch, self.batched)
        return ds.skip(self.skip) if self.skip else ds

    def head(self, n: int) -> tuple[Any, Optional[Any]]:
        """The first ``n`` examples as arrays ``(x, y or None)``, reading no further than needed.

        A generator object is never read ahead of training: its head comes from the one
        element already read.
        """
        import tensorflow as tf

        if self.single_pass:
            rows = self._first if self.batched else tuple(stack_rows([p]) for p in self._first)
            k = min(n, n_rows(rows[0]))
            picked = tuple(tf.nest.map_structure(lambda a: np.asarray(a)[:k], p) for p in rows)
            return picked[0], picked[1] if len(picked) > 1 else None
        ds = self._make(0, self.batched).skip(self.skip)
        if self.batched:
            ds = ds.unbatch()
        rows = list(ds.take(n).as_numpy_iterator())
        if not rows:
            raise DataError("the data stream is empty" + (" after its held-out part" if self.skip else ""))
        x = stack_rows([r[0] for r in rows])
        y = stack_rows([r[1] for r in rows]) if len(rows[0]) > 1 else None
        return x, y

    def leading(self, n: int) -> list[Element]:
        """The first ``n`` elements (examples or batches) as numpy, read afresh (not for a generator object)."""
        return list(self._make(0, self.batched).skip(self.skip).take(n).as_numpy_iterator())

    def first_batch_size(self) -> int:
        """Examples in the first element of a batched stream (its own batch size)."""
        first = self._first if self.single_pass else self.leading(1)[0]
        return n_rows(first[0])

    def cardinality(self) -> Optional[int]:
        """Number of elements when the source knows it (a finite Dataset), else None."""
        if self.single_pass:
            return None
        n = int(self._make(0, self.batched).cardinality())
        return max(0, n - self.skip) if n >= 0 else None


def _per_epoch(factory: Callable[..., Any]) -> Callable[[int], Any]:
    """Accept ``f()`` and ``f(epoch)``."""
    try:
        takes_epoch = len(inspect.signature(factory).parameters) >= 1
    except (TypeError, ValueError):
        takes_epoch = False
    return (lambda epoch: factory(epoch)) if takes_epoch else (lambda epoch: factory())


def _normalised(ds: Any) -> Any:
    """A Dataset whose elements are (x,) or (x, y) tuples."""
    spec = ds.element_spec
    if isinstance(spec, tuple):
        if len(spec) == 3:
            raise DataError("sample weights are not supported by fine-tuning: give elements (x, y) or x")
        if len(spec) not in (1, 2):
            raise DataError(f"a data element must be x, (x,) or (x, y); got a tuple of {len(spec)}")
        return ds
    return ds.map(lambda x: (x,))


def _of_datasets(factory: Callable[[int], Any], input_rank: Optional[int]) -> Stream:
    import tensorflow as tf

    def make(epoch: int, batched: bool) -> Any:
        ds = factory(epoch)
        if not isinstance(ds, tf.data.Dataset):
            raise DataError(f"the data callable must return a tf.data.Dataset or an iterator of batches; "
                            f"got {type(ds).__name__}")
        return _normalised(ds)

    spec = make(0, False).element_spec
    x_spec = first_leaf(spec[0])
    rank = x_spec.shape.rank
    if rank is None:
        raise DataError("the data set's inputs have an unknown rank; give them a shape (e.g. with ensure_shape)")
    first_known = rank > 0 and x_spec.shape[0] is not None
    return Stream(make, rank, first_known, len(spec) == 2, input_rank)


def _of_iterators(factory: Callable[[int], Iterator], first: Any, input_rank: Optional[int],
                  single_pass: bool) -> Stream:
    """Python iterables read through `Dataset.from_generator`; ``first`` is an element already read (its shapes)."""
    import tensorflow as tf

    first = split_element(first)

    def make(epoch: int, batched: bool) -> Any:
        def spec(v: Any) -> Any:
            v = np.asarray(v)
            return tf.TensorSpec(shape=((None,) + v.shape[1:]) if batched else v.shape, dtype=tf.as_dtype(v.dtype))

        signature = tuple(tf.nest.map_structure(spec, part) for part in first)
        return tf.data.Dataset.from_generator(lambda: (split_element(e) for e in factory(epoch)),
                                              output_signature=signature)

    # Elements of a generator are batches unless the model's input rank says they are single examples.
    return Stream(make, int(np.ndim(first_leaf(first[0]))), False, len(first) == 2, input_rank, single_pass, first)
