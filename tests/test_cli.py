"""The command line: targets, optimize, validate and demo run as a user would run them."""
import json
import subprocess
import sys

import numpy as np
import pytest


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
    assert proc.returncode == 2 and "bad command line 'frobnicate'" in proc.stderr


# ----------------------------------------------------------------------------- errors: one line, no traceback


def _one_line_error(proc, code=1):
    assert proc.returncode == code, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kerascompress: error: "), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    return lines[0]


@pytest.fixture
def parsed_flags():
    from kerascompress import cli

    def parse(*flags):
        cli.FLAGS.unparse_flags()
        cli.FLAGS(["kerascompress", "--verbose", *flags])  # --verbose: no stderr filter inside pytest
        return cli

    yield parse
    __import__("kerascompress.cli").cli.FLAGS.unparse_flags()


def test_an_unexpected_exception_is_one_line_and_debug_shows_the_traceback(parsed_flags, monkeypatch, capsys):
    cli = parsed_flags()

    def broken(path):
        raise ValueError("something deep\nwent wrong")

    monkeypatch.setattr(cli, "cmd_optimize", broken)
    assert cli.main(["kerascompress", "optimize", "m.keras"]) == 1
    err = capsys.readouterr().err
    assert err == ("kerascompress: error: unexpected ValueError: something deep went wrong (run again with --debug "
                   "for the traceback, and please report it)\n")
    cli = parsed_flags("--debug")
    monkeypatch.setattr(cli, "cmd_optimize", broken)
    assert cli.main(["kerascompress", "optimize", "m.keras"]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "in broken" in err
    assert err.strip().splitlines()[-1] == "kerascompress: error: unexpected ValueError: something deep went wrong"


def test_a_kerascompress_error_from_a_command_is_its_message(parsed_flags, monkeypatch, capsys):
    from kerascompress.errors import DataError

    cli = parsed_flags()
    monkeypatch.setattr(cli, "cmd_validate", lambda path: (_ for _ in ()).throw(DataError("labels are strings")))
    assert cli.main(["kerascompress", "validate", "m.tflite"]) == 1
    assert capsys.readouterr().err == "kerascompress: error: labels are strings\n"


def test_bad_inputs_through_the_command_line_are_one_line(parsed_flags, digits_cnn, digits_data, tmp_path, capsys):
    """The real commands in-process (a subprocess per case would cost a TensorFlow import each)."""
    digits_cnn.save(tmp_path / "m.keras")
    x = digits_data[0][:100]
    np.savez(tmp_path / "d.npz", x=x, y=np.array(["shoe", "shirt"] * 50))
    cases = [
        (["--target", "quantum-9000"], "unknown target 'quantum-9000'"),
        (["--target", "x86-avx2", "--data", str(tmp_path / "d.npz")], "labels are strings (e.g. 'shoe')"),
        (["--target", "x86-avx2", "--data", str(tmp_path / "nope.npz")], "--data"),
        (["--target", "x86-avx2", "--max_accuracy_drop", "7"], "max_accuracy_drop must be in [0, 1]"),
        (["--target", "x86-avx2", "--recipe", "turbo"], "unknown recipe 'turbo'"),
        (["--target", "x86-avx2", "--out", str(tmp_path / "d.npz")], "is an existing file"),
    ]
    for flags, words in cases:
        cli = parsed_flags(*flags)
        assert cli.main(["kerascompress", "optimize", str(tmp_path / "m.keras")]) == 1, flags
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("kerascompress: error: ") and words in err[0], (flags, err)
    cli = parsed_flags()
    assert cli.main(["kerascompress", "validate", str(tmp_path / "m.keras")]) == 1
    assert "validate needs --reference MODEL" in capsys.readouterr().err


def test_a_bad_flag_value_is_one_line_and_dashes_are_accepted(capsys):
    from kerascompress import cli

    try:
        with pytest.raises(SystemExit) as exit_:
            cli._parse_flags(["kerascompress", "--max-accuracy-drop=lots"])
        assert exit_.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "--max_accuracy_drop=lots" in err[0] and "could not convert" in err[0]
        cli._parse_flags(["kerascompress", "--max-accuracy-drop=0.05", "--unsafe-load"])
        assert cli.FLAGS.max_accuracy_drop == 0.05 and cli.FLAGS.unsafe_load
    finally:
        cli.FLAGS.unparse_flags()


def test_a_lambda_file_is_refused_unless_unsafe_load_is_given(parsed_flags, digits_data, tmp_path, capsys):
    import keras

    x = keras.Input((8, 8, 1))
    y = keras.layers.Lambda(lambda t: t * 2.0)(x)
    keras.Model(x, keras.layers.Dense(10, activation="softmax")(keras.layers.Flatten()(y))).save(tmp_path / "l.keras")
    np.savez(tmp_path / "d.npz", x=digits_data[0][:300], y=digits_data[1][:300])
    flags = ["--target", "x86-avx2", "--data", str(tmp_path / "d.npz"), "--recipe", "quantize", "--runs", "3",
             "--out", str(tmp_path / "out")]
    cli = parsed_flags(*flags)
    assert cli.main(["kerascompress", "optimize", str(tmp_path / "l.keras")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Lambda layer" in err[0] and "--unsafe_load" in err[0]
    cli = parsed_flags(*flags, "--unsafe_load")
    assert cli.main(["kerascompress", "optimize", str(tmp_path / "l.keras")]) == 0, capsys.readouterr().err
    assert (tmp_path / "out" / "report.json").exists()
