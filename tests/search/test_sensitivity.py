"""Damage curves: zero for an unchanged model, KL for class outputs, interpolation between probed widths."""
import keras
import numpy as np
import pytest

from kerascompress.search.sensitivity import DamageProbe, output_damage


def test_output_damage_is_kl_for_probabilities_and_relative_mse_otherwise():
    p = np.array([[0.5, 0.5], [0.9, 0.1]])
    assert output_damage(p, p) == pytest.approx(0.0, abs=1e-9)
    q = np.array([[0.25, 0.75], [0.9, 0.1]])
    kl = 0.5 * (0.5 * np.log(0.5 / 0.25) + 0.5 * np.log(0.5 / 0.75))
    assert output_damage(p, q) == pytest.approx(kl, rel=1e-4)
    r = np.array([[1.0], [3.0]])
    assert output_damage(r, r + 1.0) == pytest.approx(1.0 / 5.0)


def test_probe_interpolates_between_measured_widths():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    probe = DamageProbe(model, np.random.default_rng(0).standard_normal((16, 4)).astype(np.float32))
    assert probe(7, 16, model) == pytest.approx(0.0, abs=1e-9)
    probe.curves[7][16] = 0.4
    assert probe.damage(7, 32, 32) == 0.0
    assert probe.damage(7, 24, 32) == pytest.approx(0.2)
    assert probe.damage(7, 16, 32) == pytest.approx(0.4)
