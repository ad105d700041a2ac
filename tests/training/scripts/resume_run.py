"""Fine-tune with checkpoints, optionally SIGKILL-ing this process after a given step.

argv: checkpoint_dir out_npz kill_after_step strategy(one|mirrored) dropout(0|1)
Always passes resume=True: an empty directory starts a fresh run, a used one continues.
"""
import json
import os
import signal
import sys

from kerascompress.training.strategies import logical_cpus, mirrored

ckpt, out, kill_after, which, dropout = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5] == "1"
devices = logical_cpus(2) if which == "mirrored" else None  # before any TensorFlow op

import keras  # noqa: E402
import numpy as np  # noqa: E402

from kerascompress.training.finetune import finetune  # noqa: E402
from tests.helpers.training import digits, small_cnn, teacher_of  # noqa: E402


class KillAfter(keras.callbacks.Callback):
    """Dies like a pre-empted job: no clean-up, no exception handling."""

    def __init__(self):
        super().__init__()
        self.steps = 0

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1
        if self.steps == kill_after:
            os.kill(os.getpid(), signal.SIGKILL)


x, y, _, _ = digits(600)
model = small_cnn(dropout=0.3 if dropout else 0.0)
trained = finetune(model, (x, y), epochs=3, teacher=teacher_of(model), batch_size=64, learning_rate=1e-3,
                   strategy=mirrored(devices) if devices else None, checkpoint_dir=ckpt, resume=True,
                   checkpoint_every=4, progress=False, callbacks=[KillAfter()])
np.savez(out, *trained.get_weights())
print(json.dumps({"history_loss": trained.history.history["loss"]}))
