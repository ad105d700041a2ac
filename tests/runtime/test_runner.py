"""The Runner protocol: every runtime wrapper offers the same five members."""
from __future__ import annotations

import keras
import pytest

from kerascompress.export.onnx import to_onnx
from kerascompress.export.tflite import to_tflite
from kerascompress.runtime.litert import LiteRTModel
from kerascompress.runtime.onnx_runner import OnnxModel
from kerascompress.runtime.runner import Runner
from kerascompress.runtime.tensorrt_runner import TensorRTEngineModel

MEMBERS = ("num_threads", "predict", "prepare_timing", "run_once", "latency")


@pytest.fixture(scope="module")
def tiny():
    inp = keras.Input((4,))
    return keras.Model(inp, keras.layers.Dense(2)(inp))


def test_litert_and_onnxruntime_runners_are_runners(tiny):
    assert isinstance(LiteRTModel(to_tflite(tiny)), Runner)
    assert isinstance(OnnxModel(to_onnx(tiny).model_bytes), Runner)


def test_the_tensorrt_runner_class_has_every_member():
    """Its instances need a GPU; the class itself must still provide the protocol."""
    for member in MEMBERS[1:]:
        assert callable(getattr(TensorRTEngineModel, member)), member


@pytest.mark.parametrize("missing", MEMBERS)
def test_an_object_missing_one_member_is_not_a_runner(missing):
    members = {"num_threads": 1, "predict": lambda self, x: x, "prepare_timing": lambda self, x=None: None,
               "run_once": lambda self: 1.0, "latency": lambda self, runs=50, warmup=5, x=None: None}
    assert isinstance(type("Complete", (), members)(), Runner)
    del members[missing]
    assert not isinstance(type("Partial", (), members)(), Runner)
