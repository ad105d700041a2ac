"""One worker of a 2-process MultiWorkerMirroredStrategy fine-tuning (TF_CONFIG comes from the environment).

argv: out_dir epochs [checkpoint_dir]. Writes weights_<task>.npz; prints a JSON line with timings.
"""
import json
import os
import sys
import time

import psutil
import tensorflow as tf

t_start = time.perf_counter()
# The strategy must exist before any other TensorFlow op runs in this process.
strategy = tf.distribute.MultiWorkerMirroredStrategy()
t_strategy = time.perf_counter()

import keras  # noqa: E402
import numpy as np  # noqa: E402

from kerascompress.training.finetune import finetune  # noqa: E402
from tests.helpers.training import digits, small_cnn, teacher_of  # noqa: E402

out_dir, epochs = sys.argv[1], int(sys.argv[2])
checkpoint_dir = sys.argv[3] if len(sys.argv) > 3 else None
task = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
x, y, _, _ = digits(1000)
model = small_cnn()
epoch_seconds = []


class Timer(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        epoch_seconds.append(logs["seconds"])


t0 = time.perf_counter()
trained = finetune(model, (x, y), epochs=epochs, teacher=teacher_of(model), strategy=strategy, batch_size=64,
                   learning_rate=1e-3, progress=False, callbacks=[Timer()], checkpoint_dir=checkpoint_dir,
                   checkpoint_every=8)
t1 = time.perf_counter()
np.savez(os.path.join(out_dir, f"weights_{task}.npz"), *trained.get_weights())
print(json.dumps({"task": task, "replicas": strategy.num_replicas_in_sync, "strategy_seconds": t_strategy - t_start,
                  "finetune_seconds": t1 - t0, "epoch_seconds": epoch_seconds,
                  "process_seconds": time.time() - psutil.Process().create_time()}))
