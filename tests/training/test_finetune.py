"""`finetune` on one device: trains a copy, learns from labels or a teacher, calls callbacks, streams, stops early."""
from __future__ import annotations

import csv
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import layers as L

from kerascompress.data.bundle import make_bundle
from kerascompress.errors import ConfigError, DataError, StrategyError
from kerascompress.training.finetune import finetune
from tests.helpers.training import digits, small_cnn, teacher_of


def _data(n=256, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 8)).astype("float32")
    y = (x[:, 0] + x[:, 1] > 0).astype("int64") + (x[:, 2] > 1).astype("int64")
    return x, y


def _model(width=16, seed=0):
    keras.utils.set_random_seed(seed)
    x = keras.Input((8,))
    h = L.Dense(width, activation="relu")(x)
    return keras.Model(x, L.Dense(3, activation="softmax")(h))


def _accuracy(model, x, y):
    return float((np.argmax(model.predict(x, verbose=0), -1) == y).mean())


def test_labels_only_improves_and_leaves_caller_untouched():
    x, y = _data()
    model = _model()
    before = [w.copy() for w in model.get_weights()]
    lines = []
    tuned = finetune(model, (x, y), epochs=3, learning_rate=1e-2, progress=lines.append)
    assert tuned is not model
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    assert len(lines) == 3 and "epoch 3/3" in lines[-1]
    assert _accuracy(tuned, x, y) > _accuracy(model, x, y)


def test_distillation_without_labels_moves_student_towards_teacher():
    x, y = _data()
    teacher = finetune(_model(seed=1), (x, y), epochs=5, learning_rate=1e-2, progress=False)
    student = _model(width=8, seed=2)

    def gap(m):
        return float(np.abs(m.predict(x, verbose=0) - teacher.predict(x, verbose=0)).mean())

    tuned = finetune(student, x, epochs=3, teacher=teacher, learning_rate=1e-2, progress=False)
    assert gap(tuned) < gap(student)
    both = finetune(student, make_bundle((x, y)), epochs=1, teacher=teacher, learning_rate=1e-2, progress=False)
    assert both.count_params() == student.count_params()


def test_needs_labels_or_teacher():
    x, _ = _data(32)
    with pytest.raises(DataError, match="teacher"):
        finetune(_model(), x, epochs=1, progress=False)


# ----------------------------------------------------------------------------- callbacks, validation, streams


class Recorder(keras.callbacks.Callback):
    """Remembers which hooks ran, with which logs."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def on_train_begin(self, logs=None):
        self.calls.append(("train_begin", None))

    def on_epoch_begin(self, epoch, logs=None):
        self.calls.append(("epoch_begin", epoch))

    def on_train_batch_end(self, batch, logs=None):
        self.calls.append(("batch_end", batch, dict(logs)))

    def on_epoch_end(self, epoch, logs=None):
        self.calls.append(("epoch_end", epoch, dict(logs)))

    def on_train_end(self, logs=None):
        self.calls.append(("train_end", None))


@pytest.fixture(scope="module")
def digits600():
    return digits(600)


def test_callbacks_get_every_hook_with_loss_and_validation_logs(digits600):
    x, y, xv, yv = digits600
    rec = Recorder()
    finetune(small_cnn(), (x[:128], y[:128]), epochs=2, teacher=teacher_of(small_cnn()), batch_size=32,
             progress=False, validation_data=(xv, yv), callbacks=[rec])
    kinds = [c[0] for c in rec.calls]
    assert kinds[0] == "train_begin" and kinds[-1] == "train_end"
    assert kinds.count("epoch_begin") == 2 and kinds.count("batch_end") == 8
    assert all("loss" in c[2] for c in rec.calls if c[0] == "batch_end")
    logs = [c[2] for c in rec.calls if c[0] == "epoch_end"][0]
    assert {"loss", "seconds", "val_loss", "val_task_loss", "val_distill_loss", "val_accuracy"} <= set(logs)
    # the loss mixes both terms: alpha * task + (1 - alpha) * distillation
    assert logs["val_loss"] == pytest.approx(0.5 * logs["val_task_loss"] + 0.5 * logs["val_distill_loss"])


def test_learns_with_validation_and_returns_a_plain_model(digits600):
    x, y, xv, yv = digits600
    rec = Recorder()
    trained = finetune(small_cnn(), (x, y), epochs=3, learning_rate=1e-2, batch_size=32, progress=False,
                       validation_data=(xv, yv), callbacks=[rec])
    epochs = [c[2] for c in rec.calls if c[0] == "epoch_end"]
    assert epochs[-1]["loss"] < epochs[0]["loss"]
    assert epochs[-1]["val_accuracy"] > 0.8
    assert not trained.get_layer("bn").synchronized
    assert all(layer.dtype_policy.name == "float32" for layer in trained.layers)
    assert [round(v, 6) for v in trained.history.history["loss"]] == [round(e["loss"], 6) for e in epochs]


def test_early_stopping_on_a_validation_plateau(digits600):
    x, y, xv, yv = digits600
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", min_delta=1e-3, patience=1)
    rec = Recorder()
    # A learning rate too small to move val_loss: the first epoch sets the best, the second is a plateau.
    finetune(small_cnn(), (x[:128], y[:128]), epochs=10, learning_rate=1e-9, batch_size=64, progress=False,
             validation_data=(xv, yv), callbacks=[stop, rec])
    assert [c[1] for c in rec.calls if c[0] == "epoch_end"] == [0, 1]
    assert stop.stopped_epoch == 1


def test_stop_training_set_at_a_batch_is_honoured(digits600):
    x, y, _, _ = digits600

    class StopAt(Recorder):
        def on_train_batch_end(self, batch, logs=None):
            super().on_train_batch_end(batch, logs)
            if batch == 2:
                self.model.stop_training = True

    rec = StopAt()
    finetune(small_cnn(), (x, y), epochs=3, batch_size=32, progress=False, callbacks=[rec])
    assert [c[1] for c in rec.calls if c[0] == "batch_end"] == [0, 1, 2]


def test_csv_logger_and_lr_scheduler(digits600, tmp_path):
    x, y, xv, yv = digits600
    csv_path = tmp_path / "log.csv"
    schedule = keras.callbacks.LearningRateScheduler(lambda epoch, lr: lr * 0.5)
    finetune(small_cnn(), (x[:128], y[:128]), epochs=2, batch_size=64, progress=False, validation_data=(xv, yv),
             callbacks=[schedule, keras.callbacks.CSVLogger(str(csv_path))])  # the scheduler adds its log first
    rows = list(csv.DictReader(open(csv_path)))
    assert [r["epoch"] for r in rows] == ["0", "1"]
    assert {"loss", "val_loss", "val_accuracy", "learning_rate"} <= set(rows[0])
    assert float(rows[1]["learning_rate"]) == pytest.approx(float(rows[0]["learning_rate"]) * 0.5)


def test_tensorboard_writes_train_and_validation_events(digits600, tmp_path):
    pytest.importorskip("tensorboard")
    x, y, xv, yv = digits600
    finetune(small_cnn(), (x[:128], y[:128]), epochs=2, batch_size=64, progress=False, validation_data=(xv, yv),
             callbacks=[keras.callbacks.TensorBoard(str(tmp_path))])
    events = {os.path.basename(root) for root, _, files in os.walk(tmp_path)
              if any(f.startswith("events") for f in files)}
    assert {"train", "validation"} <= events


def test_batched_dataset_trains_on_its_own_batches(digits600):
    x, y, _, _ = digits600
    ds = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(600, seed=1).batch(30)
    rec = Recorder()
    finetune(small_cnn(), ds, epochs=1, progress=False, callbacks=[rec])
    assert sum(c[0] == "batch_end" for c in rec.calls) == 20


def test_a_stream_bundle_trains_on_the_whole_stream_not_its_head(digits600):
    x, y, xv, yv = digits600
    bundle = make_bundle(lambda: tf.data.Dataset.from_tensor_slices((x, y)).batch(10), (xv, yv),
                         input_shapes=[(None, 8, 8, 1)], head_samples=50)
    assert bundle.train_stream is not None and len(bundle.x_train) == 50
    rec = Recorder()
    finetune(small_cnn(), bundle, epochs=1, batch_size=100, progress=False, callbacks=[rec])
    assert sum(c[0] == "batch_end" for c in rec.calls) == 6  # 600 examples in global batches of 100


def test_max_samples_caps_each_epoch(digits600):
    x, y, _, _ = digits600
    history = []
    finetune(small_cnn(), (x, y), epochs=1, batch_size=50, max_samples=120, progress=False, history=history)
    assert history[-1]["steps"] == 3  # 50 + 50 + 20
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    finetune(small_cnn(), ds, epochs=1, batch_size=50, max_samples=120, progress=False, history=history)
    assert history[-1]["steps"] == 3


def test_clear_errors(digits600):
    x, y, _, _ = digits600
    with pytest.raises(ConfigError, match="alpha"):
        finetune(small_cnn(), (x, y), alpha=1.5, progress=False)
    with pytest.raises(ConfigError, match="mixed_precision"):
        finetune(small_cnn(), (x, y), mixed_precision="float8", progress=False)
    with pytest.raises(ConfigError, match="schedule"):
        finetune(small_cnn(), (x, y), schedule="linear", progress=False)
    with pytest.raises(ConfigError, match="cosine.*max_steps_per_epoch"):
        finetune(small_cnn(), lambda: iter([(x[:32], y[:32])]), schedule="cosine", progress=False)
    with pytest.raises(StrategyError, match="tf.distribute.Strategy.*mirrored"):
        finetune(small_cnn(), (x, y), strategy="mirrored", progress=False)
    with pytest.raises(DataError, match="sample weights"):
        finetune(small_cnn(), tf.data.Dataset.from_tensor_slices((x, y, np.ones(600))), progress=False)


def test_cosine_schedule_decays_to_zero():
    x, y = _data(128)
    seen = []

    class Rate(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            opt = self.model.optimizer
            seen.append(float(opt.learning_rate))

    finetune(_model(), (x, y), epochs=2, batch_size=32, learning_rate=1e-2, schedule="cosine", progress=False,
             callbacks=[Rate()])
    assert seen[0] == pytest.approx(1e-2 * 0.5 * (1 + np.cos(np.pi / 8)), rel=1e-4)
    assert seen[-1] == pytest.approx(0.0, abs=1e-9)
