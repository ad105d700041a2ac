"""Target checks on the written files: MCU flash/RAM budgets, the Edge TPU op table, missing toolchains."""
from __future__ import annotations

import dataclasses

import keras
import numpy as np
import pytest
from keras import layers

from kerascompress.export.tflite import to_tflite
from kerascompress.export.tflite_memory import plan_arena
from kerascompress.pipeline.artifacts import Artifact
from kerascompress.pipeline.report import Metrics, Report, StepRecord
from kerascompress.pipeline.target_checks import check_target_fit, memory_fit, op_support_note, toolchain_note
from kerascompress.targets import load
from kerascompress.targets.op_tables import op_table


def _cnn(activation="relu"):
    keras.utils.set_random_seed(0)
    inp = keras.Input((16, 16, 3))
    x = layers.Conv2D(8, 3, padding="same")(inp)
    x = layers.LeakyReLU()(x) if activation == "leaky" else layers.ReLU()(x)
    x = layers.GlobalAveragePooling2D()(layers.Conv2D(16, 3, padding="same", activation="relu")(x))
    return keras.Model(inp, layers.Dense(4, activation="softmax")(x))


def _artifacts(model):
    x = np.random.default_rng(0).random((8, 16, 16, 3), dtype=np.float32)
    float32 = Artifact("tflite", to_tflite(model, "float32"), "float32")
    int8 = Artifact("tflite", to_tflite(model, "int8", representative_data=x, int8_io=True), "int8, int8 I/O")
    return float32, int8


@pytest.fixture(scope="module")
def cnn_artifacts():
    return _artifacts(_cnn())


def _report(float32, int8):
    def metrics(a):
        return Metrics(params=1, macs=1, precision=a.precision, size_bytes=a.size_bytes)

    steps = [StepRecord("quantize:int8", {}, "applied", before=metrics(float32), after=metrics(int8)),
             StepRecord("quantize:fp16", {}, "skipped", before=metrics(int8))]
    return Report(model_name="m", target={}, constraints={}, baseline=metrics(float32), steps=steps)


def test_a_model_within_the_mcu_budgets_fits_and_the_report_says_so(cnn_artifacts):
    float32, int8 = cnn_artifacts
    report = _report(float32, int8)
    target = load("cortex-m7")
    check_target_fit(report, target, float32, int8)
    head = plan_arena(int8.data).head_bytes
    assert report.constraints_met == {"fits_flash": True, "fits_ram": True}
    (memory,) = [n for n in report.notes if n.startswith("cortex-m7 memory:")]
    assert f"fits: {int8.size_bytes:,} B of 1,048,576 B flash; {head:,} B of activations" in memory
    assert f"float32 baseline: {float32.size_bytes:,} B, {plan_arena(float32.data).head_bytes:,} B of activations" in memory
    assert report.steps[0].details["fits_flash"] is True and "fits_flash" not in report.steps[1].details
    (firmware,) = [n for n in report.notes if "firmware not built here" in n]
    assert "xxd -i model.tflite > model_data.cc" in firmware and f"at least {head:,} B" in firmware


def test_a_model_over_budget_is_reported_per_pass_and_in_the_verdict(cnn_artifacts):
    float32, int8 = cnn_artifacts
    head = plan_arena(int8.data).head_bytes
    # flash between the int8 and the float32 size; RAM one byte short of the int8 model's activations
    tight = dataclasses.replace(load("cortex-m7"), flash_bytes=int8.size_bytes + 1, ram_bytes=head - 1)
    report = _report(float32, int8)
    report.steps.insert(0, StepRecord("channel_pruning", {}, "rolled back", before=report.baseline, after=report.baseline))
    check_target_fit(report, tight, float32, int8)
    assert report.constraints_met == {"fits_flash": True, "fits_ram": False}
    assert report.steps[0].details["fits_flash"] is False and report.steps[1].details["fits_flash"] is True
    assert any(n.startswith(f"channel_pruning: its result ({float32.size_bytes:,} B, rolled back) does not fit") for n in report.notes)
    assert any("the final model does NOT fit (RAM)" in n for n in report.notes)


def test_memory_fit_numbers(cnn_artifacts):
    _, int8 = cnn_artifacts
    fit = memory_fit(int8.data, load("cortex-m7"))
    assert (fit.model_bytes, fit.arena_head_bytes) == (len(int8.data), plan_arena(int8.data).head_bytes)
    assert fit.fits and memory_fit(int8.data, load("x86-avx2")).fits  # no budgets: nothing to exceed


def test_edge_tpu_ops_outside_the_table_fall_back_to_the_cpu_from_the_first_one():
    _, int8 = _artifacts(_cnn("leaky"))
    note = op_support_note(int8.data, op_table("edgetpu"), load("edgetpu"))
    # CONV_2D, LEAKY_RELU, CONV_2D, MEAN, FULLY_CONNECTED, SOFTMAX
    assert "LEAKY_RELU is not in the table and would run on the CPU" in note
    assert "the first unmapped operator (#1 LEAKY_RELU) and the 4 after it run on the CPU too, 5 of 6 operators" in note
    assert "rows not read in any copy of the table (confirm on coral.ai): SOFTMAX" in note
    assert "MEAN: No reduction in batch dimension" in note


def test_edge_tpu_report_for_a_model_the_table_covers(cnn_artifacts):
    float32, int8 = cnn_artifacts
    report = _report(float32, int8)
    check_target_fit(report, load("edgetpu"), float32, int8)
    (ops,) = [n for n in report.notes if n.startswith("edgetpu op table")]
    assert "all 5 operators are in the table" in ops and "measured with LiteRT's CPU kernels" in ops
    assert any("compile with: edgetpu_compiler model.tflite" in n for n in report.notes)
    assert report.constraints_met == {}  # the Edge TPU profile has no flash/RAM budget


def test_no_toolchain_note_for_targets_that_run_here_and_none_for_onnx(cnn_artifacts):
    float32, _ = cnn_artifacts
    assert toolchain_note(load("x86-avx2")) is None
    report = _report(float32, float32)
    check_target_fit(report, load("cortex-m7"), float32, Artifact("onnx", b"", "float32"))
    assert report.notes == [] and report.constraints_met == {}


def test_a_check_that_fails_is_a_note_not_an_exception(cnn_artifacts):
    float32, _ = cnn_artifacts
    report = _report(float32, float32)
    check_target_fit(report, load("cortex-m7"), float32, Artifact("tflite", b"not a flatbuffer", "int8"))
    assert len(report.notes) == 1 and report.notes[0].startswith("cortex-m7 checks could not run on the final model")


def test_op_table_rows_cite_where_they_were_read():
    table = op_table("edgetpu")
    assert "https://coral.ai/docs/edgetpu/models-intro/#supported-operations" in table.source
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "ADD", "QUANTIZE"} <= set(table.ops)
    assert all(r.row_read_in is None or r.row_read_in.startswith("https://") for r in table.ops.values())
    assert not table.row("SOFTMAX").verified and table.row("CONV_2D").verified
    assert op_table("x86_64") is None
