"""Writing a run's outputs: the target's files, the TensorRT build kit, all-or-nothing."""
import keras
import pytest

import kerascompress as kc
from kerascompress.errors import ExportError
from kerascompress.passes.base import ModelState
from kerascompress.pipeline import outputs
from kerascompress.pipeline.artifacts import build_artifact
from kerascompress.pipeline.report import Metrics, Report
from kerascompress.targets import load


def _run_parts():
    inp = keras.Input((4,))
    state = ModelState(keras.Model(inp, keras.layers.Dense(2)(inp)))
    target = load("x86-avx2")
    artifact = build_artifact(state, target)
    report = Report(model_name="m", target=target.to_dict(), constraints={},
                    baseline=Metrics(params=10, macs=8, precision="float32"))
    return state, artifact, target, report


def test_every_file_lands_in_the_output_folder(tmp_path):
    state, artifact, target, report = _run_parts()
    written = outputs.write_outputs(tmp_path, state, artifact, artifact, target, report, lambda _m: None)
    assert {k: v.name for k, v in written.items()} == {
        "keras": "model.keras", "tflite": "model.tflite", "tflite_float32": "baseline_float32.tflite",
        "onnx": "model.onnx"}
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(v.name for v in written.values())
    assert written["tflite"].read_bytes() == artifact.data


def test_a_failing_writer_leaves_nothing_behind(tmp_path, monkeypatch):
    state, artifact, target, report = _run_parts()

    def disk_full(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(outputs, "to_onnx", disk_full)
    with pytest.raises(OSError, match="No space"):
        outputs.write_outputs(tmp_path, state, artifact, artifact, target, report, lambda _m: None)
    assert list(tmp_path.iterdir()) == []  # neither the files written before it nor the scratch folder


def test_an_onnx_export_error_is_a_note_not_a_failure(tmp_path, monkeypatch):
    state, artifact, target, report = _run_parts()

    def refuse(*args, **kwargs):
        raise ExportError("tf2onnx cannot convert this op")

    monkeypatch.setattr(outputs, "to_onnx", refuse)
    written = outputs.write_outputs(tmp_path, state, artifact, artifact, target, report, lambda _m: None)
    assert written["onnx"] is None and written["tflite"].exists()
    assert any("ONNX export failed: tf2onnx cannot convert this op" in n for n in report.notes)


def test_tensorrt_target_gets_qdq_onnx_and_build_files(digits_cnn, digits_split, tmp_path):
    import onnx

    result = kc.optimize(digits_cnn, target="nvidia-t4-sm75", data=digits_split, recipe="quantize",
                         output_dir=tmp_path, verbose=False)
    steps = {s.name: s for s in result.report.steps}
    assert steps["quantize:int8"].status == "applied"
    assert steps["quantize:dynamic"].status == "skipped"
    assert result.report.baseline.accuracy - steps["quantize:int8"].after.accuracy <= 0.01
    ops = {n.op_type for n in onnx.load(str(result.artifacts["onnx"])).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert result.artifacts["tensorrt_engine"] is None  # no TensorRT on this machine
    assert result.artifacts["tensorrt_build_script"].exists()
    assert "--stronglyTyped" in (tmp_path / "trtexec.sh").read_text()
    assert any("engine not built here" in n for n in result.report.notes)


def test_2_4_sparsity_on_an_ampere_target_asks_tensorrt_for_sparse_weights(digits_cnn, digits_split, tmp_path):
    from kerascompress.passes.sparsity import Sparsity

    result = kc.optimize(digits_cnn, target="nvidia-a100-sm80", data=digits_split, recipe=[Sparsity("2:4")],
                         constraints=kc.Constraints(max_accuracy_drop=1.0), output_dir=tmp_path, verbose=False)
    (step,) = result.report.steps
    assert step.status == "applied" and step.benefit == "size+latency", step.reason
    assert "--sparsity=enable" in (tmp_path / "trtexec.sh").read_text()


def test_2_4_sparsity_on_a_turing_target_does_not(digits_cnn, digits_split, tmp_path):
    from kerascompress.passes.sparsity import Sparsity

    result = kc.optimize(digits_cnn, target="nvidia-t4-sm75", data=digits_split, recipe=[Sparsity("2:4")],
                         constraints=kc.Constraints(max_accuracy_drop=1.0), output_dir=tmp_path, verbose=False)
    assert result.report.steps[0].benefit == "compressed-size"
    assert "--sparsity" not in (tmp_path / "trtexec.sh").read_text()
