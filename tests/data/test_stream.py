"""Streams: what is a batch, reading only the head, a generator object read once."""
import numpy as np
import pytest
import tensorflow as tf

from kerascompress.data.stream import Stream, is_stream
from kerascompress.errors import DataError


def _xy(n=40):
    return np.arange(n, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32), np.arange(n, dtype=np.int64)


def test_what_is_a_stream():
    x, y = _xy()
    assert is_stream(tf.data.Dataset.from_tensor_slices(x))
    assert is_stream(lambda: iter([(x, y)])) and is_stream(iter([(x, y)]))
    assert not is_stream((x, y)) and not is_stream(x) and not is_stream({"a": x})


def test_batches_are_told_from_examples_by_the_model_rank_or_the_open_axis():
    x, y = _xy()
    examples = tf.data.Dataset.from_tensor_slices((x, y))
    assert not Stream.of(examples).batched and not Stream.of(examples, input_rank=2).batched
    assert Stream.of(examples.batch(8)).batched
    fixed = examples.batch(8, drop_remainder=True)  # a known batch axis looks like an example...
    assert not Stream.of(fixed).batched
    assert Stream.of(fixed, input_rank=2).batched  # ...until the model's rank says otherwise
    with pytest.raises(DataError, match="rank 3 .* rank 2"):
        Stream.of(examples.batch(2).batch(2), input_rank=2)


def test_head_reads_only_the_first_examples_and_after_skips_elements():
    x, y = _xy(1000)
    read = []
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(10).map(
        lambda a, b: (tf.ensure_shape(tf.py_function(lambda v: read.append(1) or v, [a], tf.float32), [None, 3]), b))
    stream = Stream.of(ds, input_rank=2)
    hx, hy = stream.head(15)
    assert hx.shape == (15, 3) and list(hy) == list(range(15))
    assert len(read) <= 4  # two batches (and a little read-ahead), not a hundred
    assert list(stream.after(3).head(2)[1]) == [30, 31]  # three batches skipped


def test_a_callable_per_epoch_and_a_generator_object_once():
    x, y = _xy(20)
    stream = Stream.of(lambda epoch: iter([(x[:10] + epoch, y[:10]), (x[10:], y[10:])]))
    assert stream.batched and stream.has_labels
    first = next(iter(stream.dataset(1)))
    assert float(first[0][0, 0]) == 1.0  # epoch 1's data
    gen = ((x[i:i + 5],) for i in range(0, 20, 5))
    once = Stream.of(gen)
    assert not once.has_labels and once.head(3)[0].shape == (3, 3)  # from the element already read
    assert sum(len(b[0]) for b in once.dataset(0).as_numpy_iterator()) == 20
    with pytest.raises(DataError, match="read only once"):
        once.dataset(1)
