"""Mixed precision: meets a budget full INT8 misses, with fewer float layers than a naive rule."""
import pytest

from kerascompress.export.tflite import to_tflite
from kerascompress.quant.mixed import artifact_evaluator, metric_of, search_mixed_plan
from kerascompress.quant.plan import PrecisionPlan
from kerascompress.runtime.litert import LiteRTModel
from kerascompress.targets.target import Kernel, Target

X86 = Target("x86-test", precisions={"fp32": Kernel.FAST, "fp16": Kernel.STORAGE, "int8": Kernel.FAST})
GPU = Target("gpu-test", runtime="tensorrt", device="gpu",
             precisions={"fp32": Kernel.FAST, "fp16": Kernel.FAST, "int8": Kernel.FAST})
EDGETPU = Target("tpu-test", device="npu", precisions={"int8": Kernel.FAST}, full_integer_only=True)
NO_INT8 = Target("fp-only", precisions={"fp32": Kernel.FAST, "fp16": Kernel.FAST})


@pytest.fixture(scope="module")
def split(digits_data):
    x, y, xt, yt = digits_data
    return x[:256], x[256:756], y[256:756], xt, yt


def _accuracy(data, x, y):
    return metric_of(LiteRTModel(data).predict(x), y, None)


def _tflite_builder(model, calib):
    """plan -> the LiteRT model of ``model`` at that plan (what a pass's context builds)."""
    return lambda plan: LiteRTModel(to_tflite(model, plan, representative_data=calib))


def test_mixed_plan_meets_a_budget_full_int8_misses_with_fewer_float_layers(sensitive, split):
    calib, xs, ys, xt, yt = split
    float_acc = metric_of(sensitive.predict(xt, verbose=0), yt, None)
    int8_acc = _accuracy(to_tflite(sensitive, "int8", representative_data=calib), xt, yt)
    assert float_acc - int8_acc > 0.01  # full int8 misses a one-point budget on held-out data

    result = search_mixed_plan(sensitive, X86, calib, xs, ys, max_drop=0.01, build=_tflite_builder(sensitive, calib))
    assert result.budget_met and result.int8_metric < result.float_metric - 0.01
    assert set(result.high_precision_layers) == {"conv1", "conv2"}
    assert result.plan == PrecisionPlan("int8", float_layers=("conv1", "conv2"), layer_precisions=(
        ("conv1", "fp32"), ("conv2", "fp32"), ("fc1", "int8"), ("predictions", "int8")))
    mixed_acc = _accuracy(to_tflite(sensitive, result.plan, representative_data=calib), xt, yt)
    assert float_acc - mixed_acc <= 0.01  # and it holds on the held-out test split too

    # Naive rule: keep the first and last layers in float, then move inward.
    naive = ["conv1", "predictions", "conv2", "fc1"]
    evaluate = artifact_evaluator(_tflite_builder(sensitive, calib), sensitive, xs, ys, sensitive.predict(xs, verbose=0))
    naive_k = next(k for k in range(1, 5) if result.float_metric - evaluate(naive[:k]) <= 0.01)
    assert len(result.high_precision_layers) < naive_k

    d = result.details()
    assert d["kept_in_fp32"] == ["conv1", "conv2"] or set(d["kept_in_fp32"]) == {"conv1", "conv2"}
    assert d["savings"]["weight_size_ratio"] < 0.5 and d["cost"]["points_lost_vs_float"] <= 1.0
    assert [s["layer"] for s in d["sensitivity"][:2]] in (["conv1", "conv2"], ["conv2", "conv1"])


def test_tensorrt_plan_is_int8_where_it_pays_and_fp16_elsewhere(sensitive, split):
    calib, xs, ys, _, _ = split
    result = search_mixed_plan(sensitive, GPU, calib, xs, ys, max_drop=0.01)
    assert result.plan.mode == "mixed" and result.high_precision == "fp16"
    precisions = dict(result.plan.layer_precisions)
    assert {n for n, p in precisions.items() if p == "fp16"} == set(result.high_precision_layers)
    assert precisions["fc1"] == "int8" and "conv1" in result.high_precision_layers
    assert result.budget_met
