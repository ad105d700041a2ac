"""Fine-tuning under tf.distribute: 2 replicas on 2 logical CPUs must do what one device does.

Tolerance: with synchronised BatchNormalization the two runs compute the same function
and the same updates; only float32 summation order differs (all-reduced sums, sync-BN
moments from all-reduced sums against tf.nn.moments on one device). That is ~1 ulp
per step, amplified by tens of Adam steps: measured 1.2e-7 to 6e-7 here, so 1e-5 has
room and still catches any real difference (a per-replica mean loss doubles the
effective learning rate: differences of 1e-3 and more; unsynchronised BN: 4e-3).
"""
import json
import os
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerascompress.errors import StrategyError
from kerascompress.passes.cluster import cluster_kernel
from kerascompress.training import precision, strategies
from kerascompress.training.constrained import ClusterConstraint, MaskConstraint, constrained_finetune
from kerascompress.training.finetune import finetune
from tests.helpers.training import (
    SCRIPTS,
    child_env,
    digits,
    free_ports,
    last_json,
    max_abs_diff,
    small_cnn,
    teacher_of,
)

REPLICA_TOL = 1e-5


@pytest.fixture(scope="module")
def data():
    return digits(1000)


class ReplicaSpread(keras.callbacks.Callback):
    """At the end of training, how far apart the per-replica copies of each student variable are."""

    def on_train_end(self, logs=None):
        self.spread = {}
        for v in self.model.variables:
            copies = [c.numpy() for c in getattr(v.value, "values", [v.value])]
            self.spread[v.path] = max_abs_diff(copies[:1] * len(copies), copies)


def _train(model, data, strategy, **kwargs):
    x, y, _, _ = data
    options = dict(epochs=2, batch_size=64, learning_rate=1e-3, progress=False)
    options.update(kwargs)
    return finetune(model, (x[:-1], y[:-1]), strategy=strategy, **options)  # 999: a short last batch too


@pytest.mark.needs_cpus(2)
def test_two_replicas_match_one_device_with_teacher_and_batchnorm(data, mirrored):
    model = small_cnn()
    teacher = teacher_of(model)
    one = _train(model, data, None, teacher=teacher)
    spread = ReplicaSpread()
    two = _train(model, data, mirrored, teacher=teacher, callbacks=[spread])
    diff = max_abs_diff(one.get_weights(), two.get_weights())
    print(f"\n1 vs 2 replicas: max abs weight difference {diff:.2e}")
    assert diff < REPLICA_TOL
    assert max(spread.spread.values()) == 0.0  # the mirrored copies stay identical, BN statistics included
    assert not two.get_layer("bn").synchronized  # the caller gets the plain configuration back


@pytest.mark.needs_cpus(2)
def test_unsynchronised_batchnorm_statistics_diverge(data, mirrored):
    """The pitfall sync BN avoids: per-replica BN writes each replica's own statistics into its own copy."""
    model = small_cnn()
    one = _train(model, data, None, epochs=1)
    spread = ReplicaSpread()
    two = _train(model, data, mirrored, epochs=1, sync_batchnorm=False, callbacks=[spread])
    assert spread.spread["bn/moving_mean"] > 0.0  # the "mirrored" copies silently differ
    assert max_abs_diff(one.get_weights(), two.get_weights()) > 1e-4


@pytest.mark.needs_cpus(2)
def test_pure_distillation_with_a_regulariser_matches(data, mirrored):
    x, _, _, _ = data
    keras.utils.set_random_seed(2)
    inp = keras.Input((8, 8, 1))
    h = keras.layers.Flatten()(inp)
    h = keras.layers.Dense(32, activation="relu", kernel_regularizer=keras.regularizers.L2(1e-2))(h)
    model = keras.Model(inp, keras.layers.Dense(10, activation="softmax")(h))
    teacher = teacher_of(model, 1.2)
    runs = [finetune(model, x, epochs=1, teacher=teacher, strategy=s, batch_size=50, learning_rate=1e-3,
                     progress=False) for s in (None, mirrored)]
    assert max_abs_diff(runs[0].get_weights(), runs[1].get_weights()) < REPLICA_TOL


@pytest.mark.needs_cpus(2)
def test_a_streamed_dataset_matches_too(data, mirrored):
    x, y, _, _ = data
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(100)
    model = small_cnn()
    runs = [finetune(model, ds, epochs=1, strategy=s, learning_rate=1e-3, progress=False) for s in (None, mirrored)]
    assert max_abs_diff(runs[0].get_weights(), runs[1].get_weights()) < REPLICA_TOL


@pytest.mark.needs_cpus(2)
def test_the_monitor_and_validation_decide_alike_under_two_replicas(data, mirrored):
    x, y, xv, yv = data
    model = small_cnn()
    histories = []
    for strategy in (None, mirrored):
        histories.append([])
        finetune(model, (x, y), epochs=3, learning_rate=1e-3, strategy=strategy, monitor=(xv[:200], yv[:200]),
                 validation_data=(xv[200:], yv[200:]), progress=False, history=histories[-1])
    for key in ("monitor", "val_loss", "val_accuracy"):
        one, two = ([h.get(key) for h in run if key in h] for run in histories)
        assert len(one) == len(two) >= 3 and np.allclose(one, two, atol=1e-5), key


@pytest.mark.needs_cpus(2)
def test_dropout_model_trains_under_two_replicas(data, mirrored):
    trained = _train(small_cnn(dropout=0.3), data, mirrored, epochs=1)
    assert all(np.isfinite(w).all() for w in trained.get_weights())


@pytest.mark.needs_cpus(2)
def test_constrained_kernels_stay_exact_and_match_one_device(data, mirrored):
    x, y, _, _ = data
    results = []
    for strategy in (None, mirrored):
        model = small_cnn()
        conv, dense = model.get_layer("conv").kernel, model.get_layer("logits").kernel
        clustered, cents, segs, frozen = cluster_kernel(keras.ops.convert_to_numpy(conv), 4)
        conv.assign(clustered)
        mask = (np.random.default_rng(0).random(tuple(dense.shape)) > 0.5).astype(np.float32)
        dense.assign(keras.ops.convert_to_numpy(dense) * mask)
        start = keras.ops.convert_to_numpy(dense).copy()
        constrained_finetune(model, x, y, [ClusterConstraint(conv, cents, segs, frozen), MaskConstraint(dense, mask)],
                             epochs=1, learning_rate=1e-3, strategy=strategy)
        learned = keras.ops.convert_to_numpy(dense)
        assert np.all(learned[mask == 0] == 0.0) and np.any(learned != start)
        assert np.unique(keras.ops.convert_to_numpy(conv)).size <= 4
        results.append(model.get_weights())
    assert max_abs_diff(*results) < REPLICA_TOL


@pytest.mark.needs_cpus(2)
def test_quantization_aware_training_matches(data, mirrored):
    """Fake-quant ranges follow the global batch's range, so replicas agree with one device."""
    from kerascompress.models.copy import copy_model
    from kerascompress.passes.qat import activation_ranges, quantization_aware_model

    x, y, _, _ = data
    model = small_cnn()
    qat = quantization_aware_model(copy_model(model), x[:256])
    runs = [finetune(qat.model, (x, y), epochs=1, teacher=model, strategy=s, learning_rate=1e-3, progress=False)
            for s in (None, mirrored)]
    assert max_abs_diff(runs[0].get_weights(), runs[1].get_weights()) < REPLICA_TOL
    ranges = [activation_ranges(r) for r in runs]
    assert all(abs(a - b) < REPLICA_TOL for k in ranges[0] for a, b in zip(ranges[0][k], ranges[1][k]))


@pytest.mark.needs_cpus(2)
def test_float16_loss_scaling_skips_a_step_on_every_replica(data, mirrored, monkeypatch):
    """One replica overflows in float16: every replica must skip the step (else the summed gradient is inf)."""
    monkeypatch.setattr(precision, "has_gpu", lambda strategy: True)  # float16 is refused on CPU otherwise
    x, y, _, _ = data
    x, y = x[:256], y[:256]
    huge = x.copy()
    huge[32:64] *= 1e5  # the second half of the first global batch: replica 1 only
    ds = tf.data.Dataset.from_tensor_slices((huge, y)).batch(64)
    seen = []

    class Scale(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append(float(self.model.optimizer.dynamic_scale.numpy()))

    trained = finetune(small_cnn(batchnorm=False), ds, epochs=1, strategy=mirrored, mixed_precision="mixed_float16",
                       learning_rate=1e-3, progress=False, callbacks=[Scale()])
    assert seen == [2.0**14] * 4  # the overflowing first step halved the scale once; later steps were finite
    assert all(np.isfinite(w).all() for w in trained.get_weights())  # and it applied nothing (Keras alone: NaN)


def test_one_mirrored_strategy_per_device_set_and_bad_strategies_refused():
    assert strategies.mirrored(["/cpu:0"]) is strategies.mirrored(["/cpu:0"])
    assert strategies.resolve(None) is tf.distribute.get_strategy()
    with pytest.raises(StrategyError, match="must be a tf.distribute.Strategy, got str.*mirrored()"):
        strategies.resolve("mirrored")


# ----------------------------------------------------------------------------- several workers


def _launch(out_dir, checkpoint_dir):
    ports = free_ports(2)
    procs = []
    for index in range(2):
        tf_config = {"cluster": {"worker": [f"localhost:{p}" for p in ports]},
                     "task": {"type": "worker", "index": index}}
        procs.append(subprocess.Popen(
            [sys.executable, str(SCRIPTS / "mwms_worker.py"), str(out_dir), "2", str(checkpoint_dir)],
            env=child_env({"TF_CONFIG": json.dumps(tf_config)}), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True))
    try:
        outputs = [p.communicate(timeout=600) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return procs, outputs


@pytest.mark.slow
def test_two_workers_match_one_device(tmp_path):
    """MultiWorkerMirroredStrategy, two local processes configured by TF_CONFIG (free ports)."""
    started = time.perf_counter()
    checkpoints = tmp_path / "ckpt"
    procs, outputs = _launch(tmp_path, checkpoints)
    if any(p.returncode for p in procs) and any("ddress already in use" in err for _, err in outputs):
        checkpoints = tmp_path / "ckpt2"  # a port was taken between picking and binding it
        procs, outputs = _launch(tmp_path, checkpoints)
    wall = time.perf_counter() - started
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, f"worker failed:\n{out[-2000:]}\n{err[-4000:]}"
    results = [last_json(out) for out, _ in outputs]
    assert all(r["replicas"] == 2 for r in results)
    print(f"\n2 workers: wall {wall:.1f}s; per worker {[round(r['process_seconds'], 1) for r in results]}s, "
          f"epochs {[[round(t, 2) for t in r['epoch_seconds']] for r in results]}s")
    weights = [[f[k] for k in f.files] for f in (np.load(tmp_path / f"weights_{i}.npz") for i in range(2))]
    assert max_abs_diff(weights[0], weights[1]) == 0.0  # both workers hold the same model
    x, y, _, _ = digits(1000)
    model = small_cnn()
    one = finetune(model, (x, y), epochs=2, teacher=teacher_of(model), batch_size=64, learning_rate=1e-3,
                   progress=False)
    diff = max_abs_diff(one.get_weights(), weights[0])
    print(f"1 device vs 2 workers: max abs weight difference {diff:.2e}")
    assert diff < REPLICA_TOL
    names = os.listdir(checkpoints)
    assert "checkpoint" in names  # the chief wrote, ...
    assert not any(n.startswith(".worker-") for n in names)  # ... the other worker's scratch copy is gone
