"""The demo (kerascompress demo): Fashion-MNIST CNN, int8 within a point, through the command line."""
import json
import subprocess
import sys

import pytest


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "kerascompress.cli", *args], capture_output=True, text=True, env=env,
                          timeout=900)


@pytest.mark.slow
def test_demo_on_a_fashion_mnist_subset(tmp_path):
    import os

    env = dict(os.environ, KERASCOMPRESS_CACHE=str(tmp_path / "cache"))
    proc = _cli("demo", "--epochs", "1", "--train_limit", "6000", "--out", str(tmp_path / "demo"), env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "demo" / "report.json").read_text())
    assert report["final"]["precision"] == "int8"
    assert report["baseline"]["accuracy"] - report["final"]["accuracy"] <= 0.01
    assert report["final_latency_ratio"] is not None
