"""PrecisionPlan: the modes a plan may name and how a report describes it."""
from __future__ import annotations

import pytest

from kerascompress.errors import ConfigError
from kerascompress.quant.plan import MODES, PrecisionPlan


def test_default_is_float32_and_plans_compare_by_value():
    assert PrecisionPlan().is_float32 and PrecisionPlan().describe() == "float32"
    assert PrecisionPlan("int8", float_layers=("a",)) == PrecisionPlan("int8", float_layers=("a",))
    assert not PrecisionPlan("fp16").is_float32


def test_unknown_mode_names_the_known_ones():
    with pytest.raises(ConfigError, match="unknown precision mode 'int4'") as info:
        PrecisionPlan("int4")
    assert all(m in str(info.value) for m in MODES)


@pytest.mark.parametrize("plan,text", [
    (PrecisionPlan("int8"), "int8"),
    (PrecisionPlan("int8", float_layers=("a", "b")), "int8 (2 layers kept in float)"),
    (PrecisionPlan("int8", int8_io=True), "int8, int8 I/O"),
    (PrecisionPlan("mixed", layer_precisions=(("a", "int8"), ("b", "fp16"), ("c", "int8"))), "mixed (1 fp16, 2 int8)"),
    (PrecisionPlan("fp16", float_layers=("a",)), "fp16"),  # float layers mean something only for int8
])
def test_describe(plan, text):
    assert plan.describe() == text
