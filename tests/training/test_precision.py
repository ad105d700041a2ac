"""Mixed precision: bfloat16 trains on a CPU; float16 is refused without a GPU; the caller gets float32 back."""
import keras
import numpy as np
import pytest

from kerascompress.errors import ConfigError
from kerascompress.training import precision
from kerascompress.training.finetune import finetune
from tests.helpers.training import digits, small_cnn


@pytest.fixture(scope="module")
def data():
    return digits(600)


def test_bfloat16_trains_and_returns_a_float32_model(data):
    x, y, xv, yv = data
    history = []
    trained = finetune(small_cnn(), (x, y), epochs=3, learning_rate=1e-2, batch_size=32,
                       mixed_precision="mixed_bfloat16", validation_data=(xv, yv), progress=False, history=history)
    assert history[-1]["val_accuracy"] > 0.7
    assert {layer.dtype_policy.name for layer in trained.layers} == {"float32"}
    assert all(w.dtype == np.float32 for w in trained.get_weights())


def test_float16_is_refused_on_a_cpu_with_advice(data):
    x, y, _, _ = data
    with pytest.raises(ConfigError, match="needs a GPU.*mixed_bfloat16"):
        finetune(small_cnn(), (x, y), mixed_precision="mixed_float16", progress=False)
    with pytest.raises(ConfigError, match="mixed_precision must be"):
        precision.check("fp16")


def test_float16_uses_dynamic_loss_scaling(data, monkeypatch):
    monkeypatch.setattr(precision, "has_gpu", lambda strategy: True)  # the GPU path, exercised on a CPU
    x, y, _, _ = data
    seen = []

    class Grab(keras.callbacks.Callback):
        def on_train_end(self, logs=None):
            seen.append(self.model.optimizer)

    trained = finetune(small_cnn(), (x[:128], y[:128]), epochs=1, batch_size=32, mixed_precision="mixed_float16",
                       progress=False, callbacks=[Grab()])
    assert isinstance(seen[0], keras.optimizers.LossScaleOptimizer)
    assert all(np.isfinite(w).all() for w in trained.get_weights())
