"""Peak RSS of fine-tuning on a stream of n synthetic examples (4 KiB each), made on the fly.

argv: n mode [limit_mib]
  mode = dataset      tf.data.Dataset.from_generator of single examples
         generator    a callable yielding batches of 256
         materialise  the old behaviour: the examples collected into arrays first
  limit_mib: after warming up, cap the address space at its current size plus this much
             (resource.setrlimit RLIMIT_AS), so data larger than that cannot be held.
Prints a JSON line: the peak RSS (MiB) of the process before training, the peak during
training alone (the kernel's high-water mark is reset first, so a warm-up's peak cannot
hide growth), the time taken, and the data size.
"""
import json
import resource
import sys
import time

import keras
import numpy as np
import tensorflow as tf

from kerascompress.training.finetune import finetune

N, MODE = int(sys.argv[1]), sys.argv[2]
LIMIT_MIB = int(sys.argv[3]) if len(sys.argv) > 3 else None
DIM, BATCH = 1024, 256


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def status_mib(field: str) -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":")) / 1024.0


def reset_peak() -> bool:
    """Reset the peak RSS (VmHWM) to the current RSS (Linux >= 4.0); False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def examples():
    rng = np.random.default_rng(0)
    for i in range(N):
        yield rng.standard_normal(DIM, dtype=np.float32), np.int64(i % 10)


def batches(epoch):
    rng = np.random.default_rng(epoch)
    for start in range(0, N, BATCH):
        k = min(BATCH, N - start)
        yield rng.standard_normal((k, DIM), dtype=np.float32), np.arange(start, start + k) % 10


keras.utils.set_random_seed(0)
inp = keras.Input((DIM,))
model = keras.Model(inp, keras.layers.Dense(10)(keras.layers.Dense(16, activation="relu")(inp)))
# Warm up TensorFlow and tracing on a tiny run of the same kind, so the baseline includes the runtime itself.
warm = np.zeros((4 * BATCH, DIM), np.float32), np.zeros(4 * BATCH, np.int64)
finetune(model, lambda: iter([warm]), batch_size=BATCH, progress=False)
finetune(model, tf.data.Dataset.from_tensor_slices(warm), batch_size=BATCH, progress=False)
before = peak_mib()
reset = reset_peak()
rss_start = status_mib("VmRSS")
if LIMIT_MIB:
    cap = int((status_mib("VmSize") + LIMIT_MIB) * 2**20)
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
signature = (tf.TensorSpec((DIM,), tf.float32), tf.TensorSpec((), tf.int64))
t0 = time.perf_counter()
if MODE == "dataset":
    data = tf.data.Dataset.from_generator(examples, output_signature=signature)
elif MODE == "generator":
    data = batches
else:
    xs, ys = zip(*examples())
    data = (np.stack(xs), np.array(ys))
finetune(model, data, epochs=1, batch_size=BATCH, learning_rate=1e-3, progress=False)
print(json.dumps({"n": N, "mode": MODE, "peak_before_mib": before, "rss_start_mib": rss_start,
                  "peak_during_mib": status_mib("VmHWM") if reset else peak_mib(), "peak_reset": reset,
                  "seconds": time.perf_counter() - t0, "data_mib": N * DIM * 4 / 2**20, "limit_mib": LIMIT_MIB}))
