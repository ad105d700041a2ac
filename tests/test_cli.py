"""The command line: targets, optimize, validate and demo run as a user would run them."""
import json
import subprocess
import sys

import numpy as np


def _cli(*args, cwd=None, env=None):
    return subprocess.run(
        [sys.executable, "-m", "kerascompress.cli", *args], capture_output=True, text=True, cwd=cwd, env=env,
        timeout=900,
    )


def test_targets_lists_profiles_and_this_host():
    proc = _cli("targets")
    assert proc.returncode == 0, proc.stderr
    assert "This host: host-x86_64" in proc.stdout or "This host:" in proc.stdout
    for name in ("x86-avx2", "edgetpu", "nvidia-a100-sm80", "cortex-m7"):
        assert name in proc.stdout


def test_bad_command_lines_exit_nonzero_with_usage():
    proc = _cli("frobnicate")
    assert proc.returncode == 2 and "usage" in proc.stderr
    proc = _cli("optimize", "/nonexistent/model.keras", "--target", "x86-avx2")
    assert proc.returncode == 1 and "does not exist" in proc.stderr


def test_optimize_then_validate(digits_cnn, digits_data, tmp_path):
    x_train, y_train, x_test, y_test = digits_data
    model_path = tmp_path / "digits.keras"
    digits_cnn.save(model_path)
    np.savez(tmp_path / "data.npz", x_train=x_train, y_train=y_train, x_eval=x_test, y_eval=y_test)
    out = tmp_path / "out"
    proc = _cli("optimize", str(model_path), "--target", "x86-avx2", "--data", str(tmp_path / "data.npz"),
                "--recipe", "quantize", "--out", str(out), "--runs", "10")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| quantize:int8 | applied |" in proc.stdout
    report = json.loads((out / "report.json").read_text())
    assert report["final"]["precision"] == "int8"
    proc = _cli("validate", str(out / "model.tflite"), "--reference", str(model_path),
                "--data", str(tmp_path / "data.npz"), "--runs", "10")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert result["fidelity"]["top1_agreement"] > 0.95


def test_python_dash_m_kerascompress_is_the_same_command():
    proc = subprocess.run([sys.executable, "-m", "kerascompress", "frobnicate"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2 and "kerascompress targets" in proc.stderr
