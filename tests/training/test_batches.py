"""Training data as global batches: replayed per epoch deterministically, skipped exactly, never read ahead."""
import numpy as np
import pytest
import tensorflow as tf

from kerascompress.errors import DataError
from kerascompress.training.batches import as_batches
from tests.helpers.training import last_json, run_script, small_cnn


@pytest.fixture(scope="module")
def model():
    return small_cnn()


def _arrays(n=50):
    x = np.arange(n, dtype=np.float32)[:, None, None, None] * np.ones((1, 8, 8, 1), np.float32)
    return x, np.arange(n, dtype=np.int64)


def _ids(ds):
    """The label (= example id) of every element, batch by batch."""
    return [list(b[1]) for b in ds.as_numpy_iterator()]


def test_arrays_are_reshuffled_per_epoch_deterministically(model):
    batches = as_batches(_arrays(), model, seed=3, batch_size=16)
    e0, e1 = _ids(batches.epoch(0)), _ids(batches.epoch(1))
    assert [len(b) for b in e0] == [16, 16, 16, 2]
    assert sorted(sum(e0, [])) == list(range(50))  # every example once
    assert e0 != e1
    assert _ids(as_batches(_arrays(), model, seed=3, batch_size=16).epoch(1)) == e1  # what a new process replays
    assert batches.steps_per_epoch() == 4 and batches.steps_per_epoch(max_steps=2) == 2


def test_skip_lands_on_the_same_batches(model):
    batches = as_batches(_arrays(), model, batch_size=16)
    full = _ids(batches.epoch(2))
    assert _ids(batches.epoch(2, skip_batches=2)) == full[2:]


def test_min_batch_drops_a_batch_too_small_to_split(model):
    batches = as_batches(_arrays(49), model, batch_size=16)
    assert [len(b) for b in _ids(batches.epoch(0, min_batch=2))] == [16, 16, 16]


def test_unbatched_dataset_is_batched_and_a_batched_one_rebatched(model):
    x, y = _arrays(40)
    flat = as_batches(tf.data.Dataset.from_tensor_slices((x, y)), model, batch_size=16)
    assert not flat.batched and flat.has_labels
    assert [len(b) for b in _ids(flat.epoch(0))] == [16, 16, 8]
    five = tf.data.Dataset.from_tensor_slices((x, y)).batch(5)
    assert [len(b) for b in _ids(as_batches(five, model).epoch(0))] == [5] * 8  # kept as given
    assert [len(b) for b in _ids(as_batches(five, model, batch_size=16).epoch(0))] == [16, 16, 8]  # the global batch
    exact = tf.data.Dataset.from_tensor_slices((x, y)).batch(5, drop_remainder=True)  # known batch axis: still batches
    assert as_batches(exact, model).batched


def test_inputs_only_dataset_has_no_labels(model):
    x, _ = _arrays(10)
    batches = as_batches(tf.data.Dataset.from_tensor_slices(x), model, batch_size=4)
    assert not batches.has_labels
    (batch,) = next(iter(batches.epoch(0)))
    assert batch.shape == (4, 8, 8, 1)


def test_a_callable_is_called_per_epoch_with_the_epoch(model):
    x, y = _arrays(20)
    calls = []

    def batches(epoch):
        calls.append(epoch)
        order = np.random.default_rng(epoch).permutation(20)
        for i in range(0, 20, 10):
            yield x[order[i:i + 10]], y[order[i:i + 10]]

    source = as_batches(batches, model)
    assert source.batched and source.has_labels
    assert _ids(source.epoch(1)) != _ids(source.epoch(0))
    assert _ids(source.epoch(1)) == _ids(source.epoch(1))
    assert 1 in calls


def test_samples_read_only_what_they_need(model):
    x, y = _arrays(64)
    produced = []

    def batches():
        for i in range(0, 64, 8):
            produced.append(i)
            yield x[i:i + 8], y[i:i + 8]

    source = as_batches(batches, model)
    produced.clear()
    xs, ys = source.samples(5)
    assert xs.shape == (5, 8, 8, 1) and list(ys) == [0, 1, 2, 3, 4]
    assert len(produced) <= 2  # one batch (plus tf.data's read-ahead of one), never the whole stream


def test_a_generator_object_gives_one_epoch(model):
    x, y = _arrays(30)
    gen = ((x[i:i + 10], y[i:i + 10]) for i in range(0, 30, 10))
    source = as_batches(gen, model)
    assert source.samples(4)[0].shape[0] == 4
    assert sum(len(b) for b in _ids(source.epoch(0))) == 30  # the element read for its shapes is not lost
    with pytest.raises(DataError, match="read only once"):
        source.epoch(1)


def test_bad_inputs_are_refused_clearly(model):
    with pytest.raises(DataError, match="rank"):
        as_batches(tf.data.Dataset.from_tensor_slices(np.zeros((4, 2, 8, 8, 1, 1), np.float32)), model)
    with pytest.raises(DataError, match="sample weights"):
        as_batches(tf.data.Dataset.from_tensor_slices((np.zeros((4, 8, 8, 1)), np.zeros(4), np.ones(4))), model)
    with pytest.raises(DataError, match="empty"):
        as_batches((np.zeros((0, 8, 8, 1)), np.zeros(0)), model)
    with pytest.raises(DataError, match="unsupported"):
        as_batches(42, model)
    with pytest.raises(DataError, match="labels"):
        as_batches((np.zeros((4, 8, 8, 1)), np.zeros(3)), model)


# ----------------------------------------------------------------------------- memory stays flat

#: Examples of 4 KiB: N is 16 MiB of data, 10N 156 MiB; the limit test streams 781 MiB past a 300 MiB cap.
N = 4000


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["dataset", "generator"])
def test_peak_rss_is_flat_from_n_to_10n(mode):
    small = last_json(run_script("rss_run.py", [N, mode]).stdout)
    large = last_json(run_script("rss_run.py", [10 * N, mode]).stdout)
    print(f"\n{mode}: peak RSS while training {small['peak_during_mib']:.0f} MiB for N={N}, "
          f"{large['peak_during_mib']:.0f} MiB for 10N (data {small['data_mib']:.0f} vs {large['data_mib']:.0f} MiB)")
    growth = large["peak_during_mib"] - small["peak_during_mib"]
    data_growth = large["data_mib"] - small["data_mib"]
    assert growth < 0.2 * data_growth  # materialising adds at least the data itself (measured: about twice)


@pytest.mark.slow
def test_a_stream_larger_than_the_memory_limit_trains():
    """Under an address-space limit the data cannot fit in, the stream trains; loading it whole fails."""
    streamed = run_script("rss_run.py", [200_000, "generator", 300], check=False)
    assert streamed.returncode == 0, streamed.stderr[-3000:]
    result = last_json(streamed.stdout)
    assert result["data_mib"] > 2.5 * result["limit_mib"]
    loaded = run_script("rss_run.py", [200_000, "materialise", 300], check=False)
    assert loaded.returncode != 0 and "MemoryError" in loaded.stdout + loaded.stderr
