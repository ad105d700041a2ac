"""The held-out monitor: the start competes, a plateau stops training, the best weights come back."""
from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import layers as L

from kerascompress.training.finetune import finetune


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


def test_monitor_scores_the_start_stops_on_a_plateau_and_keeps_the_best_weights():
    x, y = _data(512)
    xm, ym = _data(200, seed=5)
    history = []
    tuned = finetune(_model(), (x, y), epochs=10, learning_rate=3e-2, progress=False, monitor=(xm, ym),
                     patience=2, min_delta=0.02, history=history)
    scores = [h["monitor"] for h in history]
    assert history[0] == {"epoch": 0, "monitor": scores[0]}  # the starting point competes too
    assert all({"epoch", "loss", "seconds", "monitor"} <= set(h) for h in history[1:])
    best, stale, stop = scores[0], 0, None  # the rule, replayed on the recorded scores
    for epoch, score in enumerate(scores[1:], 1):
        best, stale = (score, 0) if score > best + 0.02 else (best, stale + 1)
        if stale >= 2:
            stop = epoch
            break
    assert stop is not None and len(history) - 1 == stop < 10
    assert _accuracy(tuned, xm, ym) == pytest.approx(best)  # the best epoch's weights came back


def test_monitor_undoes_fine_tuning_that_only_hurts():
    x, y = _data(256)
    xm, ym = _data(200, seed=5)
    good = finetune(_model(), (x, y), epochs=5, learning_rate=1e-2, progress=False)
    rng = np.random.default_rng(0)
    history = []
    tuned = finetune(good, (x, rng.integers(0, 3, len(y))), epochs=2, learning_rate=5e-2, progress=False,
                     monitor=(xm, ym), history=history)  # random labels
    assert max(h["monitor"] for h in history[1:]) <= history[0]["monitor"]
    assert all(np.array_equal(a, b) for a, b in zip(tuned.get_weights(), good.get_weights()))
