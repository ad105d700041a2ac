"""A quiet console: TensorFlow's native chatter is filtered out of the command line's stderr, our lines are not."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from pathlib import Path

import numpy as np
import pytest

import kerascompress

#: What TensorFlow 2.21 prints on import and conversion when nobody silences it.
CHATTER = ("I0000", "oneDNN", "cpu_feature_guard", "absl::InitializeLog", "XNNPACK delegate", "fully_quantize")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # the test session sets it; a user's shell does not
    root = str(Path(kerascompress.__file__).resolve().parents[1])  # this checkout, whatever the cwd
    env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


def _run(args: list[str], cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=_env(), cwd=cwd, timeout=600)


def test_native_lines_are_dropped_and_every_other_line_kept():
    script = textwrap.dedent(r"""
        import ctypes, sys
        from kerascompress import console
        console.quiet()
        native = (b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
                  b"I0000 00:00:1796399743.126437    6122 port.cc:153] oneDNN custom operations are on.\n"
                  b"W1204 16:01:27.424508 139783561292672 lite.py:2203] Please consider providing the trackable_obj\n"
                  b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n"
                  b"fully_quantize: 0, inference_type: 6, input_inference_type: FLOAT32\n"
                  b"E0000 00:00:1.5  77 cuda.cc:1] a native error stays\n"
                  b"a line from C that is not a log line\n")
        ctypes.CDLL(None).write(2, native, len(native))
        print("[kerascompress    0.1s] our progress", file=sys.stderr)
        raise SystemExit("kerascompress: error: the last line")
    """)
    proc = _run(["-c", script])
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        "E0000 00:00:1.5  77 cuda.cc:1] a native error stays",
        "a line from C that is not a log line",
        "[kerascompress    0.1s] our progress",
        "kerascompress: error: the last line",
    ]


def test_targets_prints_no_tensorflow_chatter():
    proc = _run(["-m", "kerascompress", "targets"])
    assert proc.returncode == 0, proc.stderr
    assert "This host:" in proc.stdout
    assert not [c for c in CHATTER if c in proc.stderr], proc.stderr


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, digits_cnn, digits_data):
    folder = tmp_path_factory.mktemp("console")
    digits_cnn.save(folder / "model.keras")
    x, y = digits_data[0][:300], digits_data[1][:300]
    np.savez(folder / "data.npz", x=x, y=y)
    return folder


def _optimize(folder, *extra) -> subprocess.CompletedProcess:
    return _run(["-m", "kerascompress", "optimize", "model.keras", "--target", "x86-avx2", "--recipe", "quantize",
                 "--data", "data.npz", "--runs", "3", "--out", "out", *extra], cwd=folder)


def test_a_tiny_optimize_shows_our_progress_and_no_tensorflow_chatter(tiny_run):
    proc = _optimize(tiny_run)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not [c for c in CHATTER if c in proc.stderr], proc.stderr
    lines = proc.stderr.splitlines()
    assert lines and all(line.startswith("[kerascompress ") for line in lines), lines
    assert any("quantize:int8: applied" in line for line in lines)
    assert "| quantize:int8 | applied |" in proc.stdout


@pytest.mark.parametrize("argv,quieted", [
    (["kerascompress", "targets"], True),
    (["kerascompress", "targets", "--verbose"], False),
    (["kerascompress", "--debug", "targets"], False),
])
def test_verbose_and_debug_leave_the_native_lines_alone(argv, quieted, monkeypatch, capsys):
    """The wiring: `run` quiets the console before TensorFlow loads unless --verbose or --debug is given."""
    from kerascompress import cli, console

    calls = []
    monkeypatch.setattr(console, "quiet", lambda: calls.append("quiet"))
    monkeypatch.setattr(sys, "argv", argv)
    try:
        with pytest.raises(SystemExit) as exit_:
            cli.run()
    finally:
        cli.FLAGS.unparse_flags()
    assert exit_.value.code == 0
    assert bool(calls) == quieted
    assert "This host:" in capsys.readouterr().out
