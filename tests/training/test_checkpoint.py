"""An interrupted fine-tuning resumed from its checkpoint ends with the same weights as an uninterrupted one.

Bitwise: on one CPU device the same graph runs on the same batches (the same
permutation, `skip(k)`) from the same restored state (weights, Adam slots and step,
RNG states, loss sums), and nothing else carries over from before the checkpoint.
"""
import signal

import keras
import numpy as np
import pytest

from kerascompress.errors import ResumeError
from kerascompress.training.finetune import finetune
from tests.helpers.training import digits, last_json, max_abs_diff, run_script, small_cnn, teacher_of


class Crash(Exception):
    pass


class CrashAt(keras.callbacks.Callback):
    """Raises after the given (0-based, counted over the whole run) step: a failure in the middle of an epoch."""

    def __init__(self, step):
        super().__init__()
        self.step, self.seen = step, 0

    def on_train_batch_end(self, batch, logs=None):
        if self.seen == self.step:
            raise Crash()
        self.seen += 1


def _run(model, data, ckpt, **kwargs):
    options = dict(epochs=3, teacher=teacher_of(model), batch_size=64, learning_rate=1e-3, checkpoint_every=4,
                   progress=False)
    options.update(kwargs)
    return finetune(model, data, checkpoint_dir=str(ckpt) if ckpt else None, **options)


@pytest.mark.parametrize("dropout", [0.0, 0.3], ids=["plain", "dropout"])
def test_crash_mid_epoch_then_resume_is_bitwise_identical(tmp_path, dropout):
    x, y, _, _ = digits(600)  # 10 batches per epoch
    model = small_cnn(dropout=dropout)
    reference_history, resumed_history = [], []
    reference = _run(model, (x, y), None, history=reference_history)
    with pytest.raises(Crash):
        _run(model, (x, y), tmp_path, callbacks=[CrashAt(13)])  # epoch 2, batch 4; the last save was after step 12
    resumed = _run(model, (x, y), tmp_path, resume=True, history=resumed_history)
    assert max_abs_diff(reference.get_weights(), resumed.get_weights()) == 0.0
    # The per-epoch records match too (loss sums and earlier epochs' records are in the checkpoint).
    assert [h["loss"] for h in resumed_history] == [h["loss"] for h in reference_history]


def test_a_stream_resumes_at_the_same_batch(tmp_path):
    import tensorflow as tf

    x, y, _, _ = digits(600)
    data = lambda epoch: tf.data.Dataset.from_tensor_slices((x, y)).shuffle(600, seed=epoch).batch(50)  # noqa: E731
    model = small_cnn()
    reference = _run(model, data, None, batch_size=None)
    with pytest.raises(Crash):
        _run(model, data, tmp_path, batch_size=None, callbacks=[CrashAt(17)])
    resumed = _run(model, data, tmp_path, batch_size=None, resume=True)
    assert max_abs_diff(reference.get_weights(), resumed.get_weights()) == 0.0


def test_the_held_out_monitor_resumes_its_decisions(tmp_path):
    x, y, xv, yv = digits(600)
    model = small_cnn()
    options = dict(monitor=(xv[:200], yv[:200]), patience=2, epochs=4)
    ref_history, resumed_history = [], []
    reference = _run(model, (x, y), None, history=ref_history, **options)
    with pytest.raises(Crash):
        _run(model, (x, y), tmp_path, callbacks=[CrashAt(25)], **options)
    resumed = _run(model, (x, y), tmp_path, resume=True, history=resumed_history, **options)
    assert [h.get("monitor") for h in resumed_history] == [h.get("monitor") for h in ref_history]
    assert max_abs_diff(reference.get_weights(), resumed.get_weights()) == 0.0


def test_resume_refuses_other_settings_another_model_and_a_used_directory(tmp_path):
    x, y, _, _ = digits(200)
    model = small_cnn()
    with pytest.raises(Crash):
        _run(model, (x, y), tmp_path, callbacks=[CrashAt(5)])
    with pytest.raises(ResumeError, match="already holds checkpoints.*resume=True"):
        _run(model, (x, y), tmp_path)
    with pytest.raises(ResumeError, match="different settings.*seed: 0 then, 7 now.*remove"):
        _run(model, (x, y), tmp_path, resume=True, seed=7)
    with pytest.raises(ResumeError, match="different settings.*model"):
        _run(small_cnn(batchnorm=False), (x, y), tmp_path, resume=True)
    with pytest.raises(ResumeError, match="needs checkpoint_dir"):
        finetune(model, (x, y), resume=True, progress=False)


def test_resume_of_a_finished_run_returns_the_trained_model_at_once(tmp_path):
    x, y, _, _ = digits(200)
    model = small_cnn()
    done = _run(model, (x, y), tmp_path)
    steps = []

    class Count(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            steps.append(batch)

    again = _run(model, (x, y), tmp_path, resume=True, callbacks=[Count()])
    assert steps == [] and max_abs_diff(done.get_weights(), again.get_weights()) == 0.0


def test_an_empty_directory_with_resume_starts_afresh(tmp_path):
    x, y, _, _ = digits(200)
    model = small_cnn()
    a = _run(model, (x, y), tmp_path / "a", resume=True)
    b = _run(model, (x, y), None)
    assert max_abs_diff(a.get_weights(), b.get_weights()) == 0.0


@pytest.mark.slow
@pytest.mark.parametrize("dropout", ["0", "1"], ids=["plain", "dropout"])
def test_sigkill_mid_epoch_then_resume_in_a_new_process(tmp_path, dropout):
    """The realistic case: the process dies (no exception handling) and a new process resumes."""
    full = tmp_path / "full.npz"
    run_script("resume_run.py", [tmp_path / "ckpt_full", full, -1, "one", dropout])
    killed = run_script("resume_run.py", [tmp_path / "ckpt", tmp_path / "never.npz", 15, "one", dropout], check=False)
    assert killed.returncode == -signal.SIGKILL
    resumed = tmp_path / "resumed.npz"
    run_script("resume_run.py", [tmp_path / "ckpt", resumed, -1, "one", dropout])
    a, b = np.load(full), np.load(resumed)
    assert max_abs_diff([a[k] for k in a.files], [b[k] for k in b.files]) == 0.0


@pytest.mark.slow
def test_a_checkpoint_from_one_device_resumes_on_two_replicas(tmp_path):
    """Positions count global batches, so a run may come back with another number of replicas."""
    full = tmp_path / "full.npz"
    run_script("resume_run.py", [tmp_path / "ckpt_full", full, -1, "one", "0"])
    run_script("resume_run.py", [tmp_path / "ckpt", tmp_path / "never.npz", 15, "one", "0"], check=False)
    resumed = tmp_path / "resumed.npz"
    out = run_script("resume_run.py", [tmp_path / "ckpt", resumed, -1, "mirrored", "0"])
    assert len(last_json(out.stdout)["history_loss"]) == 2  # this process ran the rest of epoch 2, and epoch 3
    a, b = np.load(full), np.load(resumed)
    assert max_abs_diff([a[k] for k in a.files], [b[k] for k in b.files]) < 1e-5  # summation order differs
