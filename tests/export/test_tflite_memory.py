"""Peak activation memory as TFLite Micro plans it: hand-computed layouts, and the real TFLM arena.

The layouts below were worked out by hand from TFLM's GreedyMemoryPlanner rules (largest
first, equal sizes in reverse tensor order, first gap that fits among buffers alive at the
same time). Where the `tflite-micro` package is installed, the planned head is compared
with the arena head TFLM's RecordingMicroAllocator reports for the same .tflite.
"""
from __future__ import annotations

import re

import keras
import numpy as np
import pytest
from keras import layers

from kerascompress.export.tflite import to_tflite
from kerascompress.export.tflite_graph import read_graph
from kerascompress.export.tflite_memory import Buffer, greedy_layout, lifetimes, plan_arena


def _offsets(buffers):
    return {b.tensor: b.offset for b in greedy_layout(buffers)}


def test_largest_first_and_gaps_reused_when_lifetimes_do_not_overlap():
    # a 64-byte buffer alive at scope 0 and another at scope 2: the 32-byte one between them reuses offset 0
    assert _offsets([Buffer(0, 64, 0, 0), Buffer(1, 32, 1, 1), Buffer(2, 64, 2, 2)]) == {0: 0, 1: 0, 2: 0}
    # all alive together: stacked, largest at the bottom
    assert _offsets([Buffer(0, 32, 0, 2), Buffer(1, 64, 0, 2), Buffer(2, 16, 0, 2)]) == {1: 0, 0: 64, 2: 96}


def test_a_small_buffer_fills_the_first_gap_big_enough_between_live_buffers():
    # equal sizes go in reverse order: Z [3,4] -> 0; Y [0,1] never meets Z -> 0 too; X [0,4] meets both -> 64
    plan = _offsets([Buffer(0, 64, 0, 4), Buffer(1, 64, 0, 1), Buffer(2, 64, 3, 4)])
    assert plan == {0: 64, 1: 0, 2: 0}
    # W [1,3] meets Y and Z (both at 0..64) and X (64..128): no gap below 128
    assert _offsets([Buffer(0, 64, 0, 4), Buffer(1, 64, 0, 1), Buffer(2, 64, 3, 4), Buffer(3, 16, 1, 3)])[3] == 128


def test_equal_sizes_are_placed_in_reverse_tensor_order_as_tflm_does():
    # Worked by hand: order t3, t2, t0 (32 bytes, reversed), then t1 (16).
    # t3 [3,3] -> 0; t2 [2,3] overlaps t3 -> 32; t0 [1,1] overlaps neither -> 0;
    # t1 [0,2] overlaps t0 (0..32) and t2 (32..64) -> 64. Head 80 (in tensor order it would be 64).
    buffers = [Buffer(0, 32, 1, 1), Buffer(1, 16, 0, 2), Buffer(2, 32, 2, 3), Buffer(3, 32, 3, 3)]
    plan = greedy_layout(buffers)
    assert {b.tensor: b.offset for b in plan} == {0: 0, 1: 64, 2: 32, 3: 0}
    assert max(b.offset + b.size for b in plan) == 80


def _mlp():
    keras.utils.set_random_seed(0)
    inp = keras.Input((40,))
    h = layers.Dense(64, activation="relu")(inp)
    return keras.Model(inp, layers.Dense(10)(layers.Dense(30, activation="relu")(h)))


def test_lifetimes_sizes_and_alignment_from_a_real_file():
    model = _mlp()
    data = to_tflite(model, "int8", representative_data=np.random.rand(16, 40).astype("float32"), int8_io=True)
    graph = read_graph(data)
    assert graph.op_names() == ["FULLY_CONNECTED"] * 3
    by_tensor = {b.tensor: b for b in lifetimes(graph)}
    assert set(by_tensor) == {graph.inputs[0], graph.outputs[0]} | {t for op in graph.operators for t in op.outputs}
    (inp,), (out,) = graph.inputs, graph.outputs
    # int8: 40 bytes -> 48 aligned; the input lives from scope 0 to its reader (scope 1)
    assert (by_tensor[inp].size, by_tensor[inp].first, by_tensor[inp].last) == (48, 0, 1)
    # the output is created by the last operator (scope 3) and lives to the end
    assert (by_tensor[out].size, by_tensor[out].first, by_tensor[out].last) == (16, 3, 3)
    hidden = graph.operators[0].outputs[0]
    assert (by_tensor[hidden].size, by_tensor[hidden].first, by_tensor[hidden].last) == (64, 1, 2)
    plan = plan_arena(data)
    # scope 1: input 48 + hidden 64 = 112 (the peak); greedy: hidden 0..64, input 64..112,
    # second hidden (32, scopes 2-3) 64..96 where the input was, output (16) at 0 after hidden died
    assert plan.peak_live_bytes == 112 and plan.head_bytes == 112
    offsets = {b.tensor: b.offset for b in plan.buffers}
    assert offsets == {hidden: 0, inp: 64, graph.operators[1].outputs[0]: 64, out: 0}
    assert "tail" in plan.note and "scratch" in plan.note


def _residual_concat():
    keras.utils.set_random_seed(0)
    inp = keras.Input((16, 16, 8))
    a = layers.Conv2D(8, 3, padding="same", activation="relu")(inp)
    x = layers.Add()([a, layers.Conv2D(8, 1)(inp)])
    x = layers.Concatenate()([x, layers.Conv2D(4, 3, padding="same")(x)])
    x = layers.Flatten()(layers.AveragePooling2D(2)(x))
    return keras.Model(inp, layers.Dense(5)(x))


def _two_heads():
    keras.utils.set_random_seed(0)
    inp = keras.Input((24, 24, 3))
    x = layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(inp)
    y = layers.Conv2D(16, 3, padding="same")(layers.Conv2D(16, 3, padding="same", activation="relu")(x))
    x = layers.ReLU()(layers.Add()([x, y]))
    a = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, [layers.Dense(3)(a), layers.Dense(7, activation="softmax")(a)])


def _tflm_arena_head(data: bytes, capfd) -> int:
    runtime = pytest.importorskip("tflite_micro.python.tflite_micro.runtime")
    capfd.readouterr()
    interpreter = runtime.Interpreter.from_bytes(data, arena_size=1 << 22)
    interpreter.print_allocations()  # RecordingMicroAllocator, printed by the C++ runtime
    text = "".join(capfd.readouterr())
    match = re.search(r"Arena allocation head (\d+) bytes", text)
    assert match, text[-2000:]
    return int(match.group(1))


@pytest.mark.parametrize("build", [_residual_concat, _two_heads, _mlp])
@pytest.mark.parametrize("int8_io", [True, False])
def test_planned_head_equals_the_real_tflm_arena_head(build, int8_io, capfd):
    pytest.importorskip("tflite_micro")
    model = build()
    x = np.random.default_rng(0).random((16, *model.inputs[0].shape[1:]), dtype=np.float32)
    data = to_tflite(model, "int8", representative_data=x, int8_io=int8_io)
    plan = plan_arena(data)
    assert plan.head_bytes == _tflm_arena_head(data, capfd)
    assert plan.peak_live_bytes <= plan.head_bytes
