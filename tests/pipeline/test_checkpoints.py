"""optimize(..., resume=True): a run interrupted in a fine-tuning continues to the same result.

The interrupted run is stopped by a KeyboardInterrupt raised from a user callback in
the middle of a fine-tuning epoch (an ordinary exception would be reported as one
failed pass and the run would go on). Bitwise equality is expected for the reason given
in tests/training/test_checkpoint.py: same graph, same batches, same restored state.
"""
import keras
import pytest
import tensorflow as tf

import kerascompress as kc
from kerascompress.errors import ResumeError, StrategyError
from kerascompress.passes import ChannelPruning
from tests.helpers.training import max_abs_diff


class InterruptAt(keras.callbacks.Callback):
    def __init__(self, step):
        super().__init__()
        self.step, self.seen = step, 0

    def on_train_batch_end(self, batch, logs=None):
        if self.seen == self.step:
            raise KeyboardInterrupt
        self.seen += 1


def _optimize(model, split, out, **kwargs):
    recipe = [ChannelPruning(0.5, finetune_epochs=2, finetune_options={"batch_size": 100, "learning_rate": 1e-3})]
    return kc.optimize(model, target="x86-avx2", data=split, recipe=recipe, output_dir=out, verbose=False,
                       latency_runs=3, constraints=kc.Constraints(max_accuracy_drop=0.5), **kwargs)


def test_an_interrupted_run_resumes_to_the_same_model(digits_cnn, digits_split, tmp_path):
    reference = _optimize(digits_cnn, digits_split, tmp_path / "reference")
    assert reference.report.steps[0].status == "applied"
    with pytest.raises(KeyboardInterrupt):  # in epoch 2 of 14 steps, 2 steps after a checkpoint
        _optimize(digits_cnn, digits_split, tmp_path / "run", callbacks=[InterruptAt(20)], checkpoint_every=9)
    saved = list((tmp_path / "run" / "checkpoints").glob("00-channel_pruning/finetune-*/ckpt-18.index"))
    assert len(saved) == 1
    resumed = _optimize(digits_cnn, digits_split, tmp_path / "run", resume=True, checkpoint_every=9)
    assert max_abs_diff(reference.model.get_weights(), resumed.model.get_weights()) == 0.0
    assert not (tmp_path / "run" / "checkpoints").exists()  # a completed run keeps no checkpoints
    with pytest.raises(ResumeError, match="holds no checkpoints to resume"):
        _optimize(digits_cnn, digits_split, tmp_path / "run", resume=True)


def test_unsafe_resumes_are_refused_with_the_fix(digits_cnn, digits_split, tmp_path):
    with pytest.raises(ResumeError, match="needs output_dir"):
        kc.optimize(digits_cnn, target="x86-avx2", data=digits_split, recipe=[], resume=True, verbose=False)
    with pytest.raises(KeyboardInterrupt):
        _optimize(digits_cnn, digits_split, tmp_path, callbacks=[InterruptAt(3)])
    with pytest.raises(ResumeError, match="interrupted run: pass resume=True.*or delete"):
        _optimize(digits_cnn, digits_split, tmp_path)
    with pytest.raises(ResumeError, match="other settings.*seed: 0 then, 1 now"):
        _optimize(digits_cnn, digits_split, tmp_path, resume=True, seed=1)
    with pytest.raises(StrategyError, match="tf.distribute.Strategy"):
        _optimize(digits_cnn, digits_split, tmp_path / "other", strategy="mirrored")


@pytest.mark.needs_cpus(2)
def test_optimize_fine_tunes_a_stream_under_two_replicas(digits_cnn, digits_data, mirrored, tmp_path):
    x, y, xv, yv = digits_data
    seen = []

    class Epochs(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append((self.model.distribute_strategy.num_replicas_in_sync, logs))

    stream = lambda epoch: tf.data.Dataset.from_tensor_slices((x, y)).shuffle(1400, seed=epoch).batch(100)  # noqa
    result = kc.optimize(digits_cnn, target="x86-avx2", data=stream, validation_data=(xv, yv),
                         recipe=[ChannelPruning(0.5, finetune_epochs=1)], strategy=mirrored, callbacks=[Epochs()],
                         output_dir=tmp_path, verbose=False, latency_runs=3)
    step = result.report.steps[0]
    assert step.status in ("applied", "rolled back"), step.reason
    assert len(seen) == 1 and seen[0][0] == 2 and "loss" in seen[0][1]  # one epoch, on two replicas
    assert step.after.accuracy > 0.8
