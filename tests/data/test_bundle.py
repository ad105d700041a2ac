"""Splitting the user's data into calibration, training and held-out parts."""
import numpy as np
import pytest
import tensorflow as tf

from kerascompress.data.bundle import DataBundle, check_inputs, make_bundle
from kerascompress.errors import DataError


def test_split_is_disjoint_and_keeps_pairs():
    x = np.arange(100, dtype=np.float32).reshape(100, 1)
    y = np.arange(100)
    b = make_bundle((x, y), eval_fraction=0.2)
    assert len(b.x_eval) == 20 and len(b.x_train) == 80
    assert set(b.y_eval).isdisjoint(set(b.y_train))
    np.testing.assert_array_equal(b.x_train[:, 0], b.y_train)  # pairs stay together
    assert b.has_labels and b.can_train
    assert len(b.calibration(10)) == 10


def test_dataset_of_batches_and_unlabelled_inputs():
    x = np.random.rand(64, 3).astype(np.float32)
    y = np.arange(64) % 3
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    b = make_bundle(ds)
    assert len(b.x_train) + len(b.x_eval) == 64
    bare = make_bundle(x)
    assert bare.y_eval is None and not bare.has_labels and not bare.can_train


def test_bad_data_is_named():
    with pytest.raises(DataError, match="inputs but 5 labels"):
        make_bundle((np.zeros((10, 2)), np.zeros(5)))
    with pytest.raises(DataError, match="must be a tf.data.Dataset"):
        make_bundle("x.npy")
    with pytest.raises(DataError, match=r"expects samples of shape \(8, 8, 1\) but `data` has \(28, 28, 1\)"):
        check_inputs(np.zeros((2, 28, 28, 1)), [(None, 8, 8, 1)])
    with pytest.raises(DataError, match="2 inputs"):
        check_inputs(np.zeros((2, 3)), [(None, 3), (None, 3)])


def test_bundle_passes_through():
    b = DataBundle(np.zeros((3, 1)), None, np.zeros((2, 1)), None)
    assert make_bundle(b) is b


def test_selection_never_uses_the_held_out_part_when_training_data_suffices():
    x = np.arange(1000, dtype=np.float32).reshape(1000, 1)
    y = np.arange(1000)
    b = make_bundle((x, y), eval_fraction=0.2)  # 800 train, 200 held out
    xs, ys = b.selection(300)
    assert len(xs) == 300
    assert set(ys).isdisjoint(set(b.y_eval))
    assert set(ys).isdisjoint(set(b.y_train[: b.calibration_samples]))  # not the calibration samples either
    small = DataBundle(x[:50], y[:50], x[900:], y[900:], validation_source="split")
    xs, ys = small.selection(30)
    np.testing.assert_array_equal(ys, y[900:930])  # a split with too little training data falls back to held-out
    given = DataBundle(x[:50], y[:50], x[900:], y[900:])  # the caller's validation data: never selected on
    xs, ys = given.selection(30)
    np.testing.assert_array_equal(ys, y[:30])


def test_validation_data_is_never_trained_or_calibrated_on():
    """Sentinel values: validation inputs are negative, training inputs positive."""
    x = np.arange(1, 601, dtype=np.float32).reshape(600, 1)
    y = np.arange(600) % 10
    xv = -np.arange(1, 201, dtype=np.float32).reshape(200, 1)
    yv = np.arange(200) % 10
    b = make_bundle((x, y), (xv, yv))
    assert b.independent_validation and b.validation_source == "validation_data"
    assert (b.x_train > 0).all() and len(b.x_train) == 600  # all of `data` trains; nothing is held out of it
    assert (b.x_eval < 0).all() and len(b.x_eval) == 200
    assert (b.calibration() > 0).all() and (b.selection(500)[0] > 0).all()
    tiny = make_bundle((x[:10], y[:10]), (xv, yv))
    assert (tiny.calibration() > 0).all() and (tiny.selection(100)[0] > 0).all()


def test_split_says_so_and_validation_needs_labels_when_data_has_them():
    x = np.zeros((100, 2), np.float32)
    b = make_bundle((x, np.zeros(100, int)))
    assert b.validation_source == "split" and not b.independent_validation
    with pytest.raises(DataError, match="validation_data` has none"):
        make_bundle((x, np.zeros(100, int)), x[:10])
    with pytest.raises(DataError, match="not both"):
        make_bundle({"train": (x, None), "eval": (x, None)}, (x, None))


# ----------------------------------------------------------------------------- streams


def _counting_stream(n, batch=50, dim=3):
    """A callable returning a fresh Dataset of n examples in batches, counting the batches produced."""
    produced = []

    def make():
        def gen():
            for start in range(0, n, batch):
                produced.append(start)
                k = min(batch, n - start)
                yield np.full((k, dim), start, np.float32) + np.arange(k, dtype=np.float32)[:, None], \
                    np.arange(start, start + k) % 7
        return tf.data.Dataset.from_generator(gen, output_signature=(
            tf.TensorSpec((None, dim), tf.float32), tf.TensorSpec((None,), tf.int64)))
    return make, produced


def test_a_large_stream_is_not_read_whole_and_its_head_is_held_out():
    make, produced = _counting_stream(10**9)  # effectively endless: reading it whole would never return
    b = make_bundle(make, max_eval=500, head_samples=300, input_shapes=[(None, 3)])
    assert b.train_stream is not None and b.validation_source == "split"
    assert len(b.x_eval) == 500 and len(b.x_train) == 300
    assert len(produced) < 40  # a few batches per reading, never the stream
    assert list(b.train_stream.head(1)[1]) == [500 % 7]  # training starts right after the held-out part
    assert b.can_train and b.training_data is b.train_stream
    assert "held out" in b.notes[0]


def test_a_small_stream_is_split_like_arrays():
    make, _ = _counting_stream(600)
    b = make_bundle(make, eval_fraction=0.25, input_shapes=[(None, 3)])
    assert b.train_stream is None and len(b.x_eval) == 150 and len(b.x_train) == 450


def test_a_reshuffling_stream_cannot_be_split_and_a_generator_object_is_refused():
    x = np.random.rand(20000, 3).astype(np.float32)
    shuffled = tf.data.Dataset.from_tensor_slices((x, np.arange(20000))).shuffle(20000).batch(100)
    with pytest.raises(DataError, match="different order each time.*validation_data"):
        make_bundle(shuffled, max_eval=1000, input_shapes=[(None, 3)])
    fixed = tf.data.Dataset.from_tensor_slices((x, np.arange(20000))).shuffle(
        20000, seed=1, reshuffle_each_iteration=False).batch(100)
    assert make_bundle(fixed, max_eval=1000, input_shapes=[(None, 3)]).train_stream is not None
    with pytest.raises(DataError, match="generator object.*callable"):
        make_bundle((b for b in [(x[:10], np.zeros(10))]), (x[:10], np.zeros(10)))


def test_a_streamed_validation_set_is_read_up_to_max_eval():
    make, produced = _counting_stream(10**9)
    x = np.random.rand(64, 3).astype(np.float32)
    b = make_bundle((x, np.arange(64) % 7), make, max_eval=120, input_shapes=[(None, 3)])
    assert len(b.x_eval) == 120 and len(b.y_eval) == 120 and len(produced) <= 5
    assert "first 120 examples" in b.notes[0]
    stream_train = make_bundle(make, (x, np.arange(64) % 7), head_samples=100, input_shapes=[(None, 3)])
    assert stream_train.independent_validation and len(stream_train.x_train) == 100
    assert stream_train.train_stream is not None
