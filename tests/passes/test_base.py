"""The pass protocol: gates, states, and a context whose build/time are the driver's."""
from __future__ import annotations

import keras
import pytest

from kerascompress.errors import KerasCompressError
from kerascompress.passes.base import (
    BENEFITS,
    Gate,
    ModelState,
    Pass,
    PassContext,
    PassOutput,
)
from kerascompress.quant.plan import PrecisionPlan
from kerascompress.targets.target import Target

TARGET = Target("t")


class Halve(Pass):
    """A pass with one parameter, for the protocol's defaults."""

    name = "halve"

    def __init__(self, ratio: float = 0.5) -> None:
        self.ratio = ratio
        self._cache = {}

    def gate(self, target, state):
        return Gate.allow("size")

    def apply(self, state, ctx):
        return PassOutput(state, {"ratio": self.ratio})


def test_gates_allow_with_a_benefit_or_refuse_with_a_reason():
    assert Gate.allow() == Gate(True, "", "size+latency")
    refused = Gate.refuse("no int8 kernels")
    assert (refused.allowed, refused.reason, refused.benefit) == (False, "no int8 kernels", "none")
    assert {"size+latency", "size", "compressed-size", "latency", "none"} <= set(BENEFITS)


def test_a_state_is_replaced_not_changed():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    state = ModelState(model)
    int8 = state.replace(precision=PrecisionPlan("int8"))
    assert state.precision == PrecisionPlan() and int8.precision.mode == "int8" and int8.model is model


def test_config_and_repr_show_public_parameters_only():
    p = Halve(0.25)
    assert p.config() == {"ratio": 0.25}
    assert repr(p) == "Halve(ratio=0.25)"
    assert (p.needs_data, p.needs_labels, p.reports_weight_values) == (False, False, False)
    assert "Keras 3" in p.tf_keras_unsupported  # by default a pass is skipped on tf_keras models, with why


def test_a_pass_missing_gate_or_apply_cannot_be_made():
    class Incomplete(Pass):
        def gate(self, target, state):
            return Gate.allow()

    with pytest.raises(TypeError):
        Incomplete()


def test_build_and_time_come_from_the_driver():
    state = ModelState(keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]))
    with pytest.raises(KerasCompressError, match="kc.optimize"):
        PassContext(TARGET).build(state)
    built = []
    ctx = PassContext(TARGET, builder=lambda s: built.append(s) or "artifact", timer=lambda arts, runs: {
        k: float(runs) for k in arts}, measures_latency=True)
    assert ctx.build(state) == "artifact" and built == [state]
    assert ctx.time({"a": "x", "b": "y"}, runs=7) == {"a": 7.0, "b": 7.0}
    far = PassContext(TARGET, timer=lambda arts, runs: {"a": 1.0}, measures_latency=False)
    assert far.time({"a": "x"}) == {}  # this host does not stand in for the target: no numbers


def test_fine_tuning_settings_carry_the_run_and_a_folder_per_model(tmp_path):
    def model(width):
        inp = keras.Input((4,))
        return keras.Model(inp, keras.layers.Dense(width)(inp))

    callback = keras.callbacks.Callback()
    ctx = PassContext(target=TARGET, strategy="s", callbacks=[callback], mixed_precision="mixed_bfloat16")
    assert ctx.fine_tuning(model(2)) == {"strategy": "s", "callbacks": [callback], "mixed_precision": "mixed_bfloat16"}
    assert ctx.fine_tuning(model(2), mixed_precision=None)["mixed_precision"] is None
    step = PassContext(target=TARGET, checkpoint_dir=tmp_path, resume=True)
    a, b, c = step.fine_tuning(model(2)), step.fine_tuning(model(2), "final-3"), step.fine_tuning(model(3))
    assert a["resume"] and a["checkpoint_dir"].parent == tmp_path
    assert a["checkpoint_dir"] != c["checkpoint_dir"]  # another architecture: another folder (trained afresh)
    assert b["checkpoint_dir"].name.startswith("final-3-")
