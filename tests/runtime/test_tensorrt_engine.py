"""The device code: self-contained, so `build_engine.py` can carry it verbatim to the target.

These functions run only where TensorRT and a GPU are; here we check the contract that
lets them be copied into the generated script: no module-level imports, and inside the
functions only the standard library, numpy, tensorrt and the CUDA bindings.
"""
from __future__ import annotations

import ast
import inspect

from kerascompress.export.tensorrt import engine_script_source
from kerascompress.runtime import tensorrt_engine

ALLOWED = {"time", "numpy", "tensorrt", "torch", "cuda"}


def _tree() -> ast.Module:
    return ast.parse(inspect.getsource(tensorrt_engine))


def test_the_module_imports_nothing_at_its_top():
    top = [n for n in _tree().body if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert top == []


def test_functions_import_only_what_the_device_has():
    used = set()
    for node in ast.walk(_tree()):
        if isinstance(node, ast.Import):
            used |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            used.add(node.module.split(".")[0])
    assert used <= ALLOWED, used - ALLOWED


def test_the_generated_script_carries_every_function():
    script = engine_script_source()
    for name in ("trt_build_engine", "trt_run_engine", "trt_time_batches"):
        assert f"def {name}(" in script
    compile(script, "build_engine.py", "exec")
