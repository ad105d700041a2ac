"""What Cluster and Sparsity share: which kernels they touch, which they leave alone and why."""
from __future__ import annotations

import keras
import pytest

from kerascompress.data.bundle import DataBundle
from kerascompress.errors import ConfigError
from kerascompress.passes.base import Gate, ModelState, PassContext, PassOutput
from kerascompress.passes.weight_constraint import WeightConstraintPass
from kerascompress.targets.target import Target


class Constrain(WeightConstraintPass):
    """Constrains Dense and Conv2D kernels; refuses kernels with an odd number of outputs."""

    name = "constrain"
    kernel_attrs = {"Dense": ("kernel",), "Conv2D": ("kernel",)}

    def gate(self, target, state):
        return Gate.allow("compressed-size")

    def apply_keras(self, state, ctx):
        return PassOutput(state, {"path": "keras"})

    def apply_tfmot(self, state, ctx):
        return PassOutput(state, {"path": "tfmot"})

    def ineligible(self, layer, shape):
        return "odd number of outputs" if shape[-1] % 2 else None


def _model() -> keras.Model:
    inner_in = keras.Input((8, 8, 4))
    inner = keras.Model(inner_in, keras.layers.Conv2D(8, 3, name="inner_conv")(inner_in), name="inner")
    inp = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(4, 3, padding="same", name="stem")(inp)  # 108 weights
    h = inner(h)  # 288 weights
    h = keras.layers.GlobalAveragePooling2D()(h)
    h = keras.layers.Dense(16, name="fc")(h)  # 128 weights
    h = keras.layers.Dense(5, name="odd")(h)  # 80 weights, odd outputs
    return keras.Model(inp, keras.layers.Dense(2, name="head")(h))  # 10 weights


def _keys(kernels):
    return [f"{layer.name}.{attr}" for layer, attr, _ in kernels]


def test_kernels_are_found_in_layer_order_inside_nested_models():
    assert _keys(Constrain().kernels(_model())) == [
        "stem.kernel", "inner_conv.kernel", "fc.kernel", "odd.kernel", "head.kernel"]


def test_every_skipped_kernel_says_why():
    p = Constrain(skip_layers=("fc",), skip_first=True, skip_last=True, min_weights=64)
    assert p.skipped(p.kernels(_model())) == {
        "stem.kernel": "first layer (skip_first)",
        "fc.kernel": "in skip_layers",
        "odd.kernel": "odd number of outputs",
        "head.kernel": "last layer (skip_last)",
    }
    small = Constrain(min_weights=200)
    assert small.skipped(small.kernels(_model()))["stem.kernel"] == "fewer than min_weights=200 weights"


def test_an_unknown_skip_layer_is_an_error_listing_the_eligible_ones():
    p = Constrain(skip_layers=("fc", "nope"))
    with pytest.raises(ConfigError, match=r"unknown or ineligible layer\(s\) \['nope'\]") as info:
        p.skipped(p.kernels(_model()))
    assert "'inner_conv'" in str(info.value)


def test_data_is_needed_only_to_fine_tune():
    assert not Constrain().needs_data and not Constrain().needs_labels
    assert Constrain(finetune_epochs=1).needs_data and Constrain(finetune_epochs=1).needs_labels


def test_tf_keras_models_take_the_tfmot_path():
    ctx = PassContext(Target("t"))
    assert Constrain().apply(ModelState(_model()), ctx).details == {"path": "keras"}
    legacy = type("Functional", (), {"__module__": "tf_keras.src.engine.functional"})()
    assert Constrain().apply(ModelState(legacy), ctx).details == {"path": "tfmot"}
    assert Constrain.tf_keras_unsupported is None


def test_tfmot_gets_the_training_split_or_nothing():
    import numpy as np

    x, y = np.zeros((10, 2)), np.arange(10)
    assert WeightConstraintPass.tfmot_data(PassContext(Target("t"))) == (None, None)
    unlabelled = PassContext(Target("t"), DataBundle(x, None, x, None))
    assert WeightConstraintPass.tfmot_data(unlabelled) == (None, None)
    xs, ys = WeightConstraintPass.tfmot_data(PassContext(Target("t"), DataBundle(x, y, x[:2], y[:2])))
    assert xs is x and ys is y
