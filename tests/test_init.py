"""`import kerascompress` is light: the examples, Keras and TensorFlow load only when a name needs them."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

import kerascompress as kc

HEAVY = ("kerascompress.examples", "keras", "tensorflow", "tf_keras", "onnx", "onnxruntime", "ai_edge_litert")


def _modules_after(code: str) -> list[str]:
    """Modules loaded in a fresh interpreter after running ``code``."""
    probe = f"import sys\n{code}\nimport json\nprint(json.dumps(sorted(sys.modules)))"
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _heavy(modules: list[str]) -> list[str]:
    return [m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY)]


def test_import_kerascompress_loads_no_examples_keras_or_tensorflow():
    loaded = _modules_after("import kerascompress")
    assert "kerascompress" in loaded
    assert _heavy(loaded) == []


def test_reading_a_target_profile_stays_light():
    loaded = _modules_after("import kerascompress as kc\nkc.targets.load('x86-avx2')\nkc.Target")
    assert "kerascompress.targets.profiles" in loaded
    assert _heavy(loaded) == []


def test_public_names_resolve_on_first_use():
    from kerascompress.pipeline.driver import optimize
    from kerascompress.targets.target import Target

    assert kc.optimize is optimize and kc.Target is Target
    assert kc.passes.__name__ == "kerascompress.passes"
    assert set(kc.__all__) <= set(dir(kc))
    with pytest.raises(AttributeError, match="no attribute 'frobnicate'"):
        kc.frobnicate  # noqa: B018
