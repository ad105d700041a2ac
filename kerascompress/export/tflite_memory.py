"""Peak activation memory of a .tflite as TensorFlow Lite Micro would plan it.

A microcontroller runs a model from one fixed buffer, the tensor arena. Its "head" holds
the activations, laid out ahead of time by TFLM's `GreedyMemoryPlanner`; this module
reproduces that layout from the file alone, so a model's RAM need is known before it
reaches the device. The rules, from the TFLM sources:

- which tensors: every tensor of the main subgraph without stored data, not a variable,
  of non-zero size (``AllocationInfoBuilder::InitializeAllocationInfo``,
  tensorflow/lite/micro/micro_allocation_info.cc);
- lifetimes, in "allocation scopes" (scope 0 = before the first operator, scope i+1 =
  operator i): subgraph inputs and outputs are created at scope 0, an operator's outputs
  at its scope; a tensor lives until the last operator that reads it, subgraph outputs
  until the last scope (``MarkAllocationLifetimes``);
- sizes are rounded up to 16 bytes (``CreatePlan`` with ``MicroArenaBufferAlignment()``);
- placement (``GreedyMemoryPlanner::CalculateOffsetsIfNeeded``,
  tensorflow/lite/micro/memory_planner/greedy_memory_planner.cc): buffers sorted by size,
  largest first (buffers of equal size in reverse tensor order: the planner fills
  its sort array from the tail and sorts it stably); each goes into the first
  gap, walking the already placed buffers that overlap it in time in offset order, that
  is big enough, else after the last of them. The head is the highest end offset.

What the head does not include: the arena's tail (persistent data: per-tensor and
per-operator structs, quantization parameters; a few KB for a small CNN) and scratch
buffers kernels request at prepare time (CMSIS-NN's im2col and similar). Both come on top;
`ArenaPlan.note` says so. Subgraphs called by control-flow operators are not planned.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

from kerascompress.export.tflite_graph import TFLiteGraph, read_graph

#: TFLM's arena buffer alignment (``MicroArenaBufferAlignment()``, tensorflow/lite/micro/memory_helpers.h).
ARENA_ALIGNMENT = 16


@dataclasses.dataclass(frozen=True)
class Buffer:
    """One planned activation: tensor index, aligned size, lifetime [first, last] in scopes, offset."""

    tensor: int
    size: int
    first: int
    last: int
    offset: int = -1

    def overlaps_in_time(self, first: int, last: int) -> bool:
        return not (self.first > last or first > self.last)


@dataclasses.dataclass(frozen=True)
class ArenaPlan:
    """The planned head of a TFLM arena for one model."""

    buffers: tuple[Buffer, ...]
    head_bytes: int  # the planner's maximum end offset: what the activations need
    peak_live_bytes: int  # the most bytes alive in one scope: a lower bound no planner beats
    subgraphs: int

    @property
    def note(self) -> str:
        extra = "" if self.subgraphs == 1 else f"; {self.subgraphs - 1} control-flow subgraph(s) not planned"
        return (
            "TFLM greedy plan of the activations (arena head); the arena also needs its tail (persistent "
            f"structs, a few KB) and any kernel scratch buffers (e.g. CMSIS-NN im2col){extra}"
        )


def _align(n: int, alignment: int = ARENA_ALIGNMENT) -> int:
    return (n + alignment - 1) // alignment * alignment


def lifetimes(graph: TFLiteGraph) -> list[Buffer]:
    """Buffers the planner is given, in tensor order, with TFLM's lifetimes (unplaced)."""
    n_ops = len(graph.operators)
    first: dict[int, int] = {}
    last: dict[int, int] = {}

    def created(t: int, scope: int) -> None:
        first[t] = scope
        last[t] = scope

    for t in list(graph.inputs) + list(graph.outputs):
        created(t, 0)
    for op in graph.operators:
        scope = op.index + 1
        for t in op.outputs:
            if t >= 0:
                created(t, scope)
        for t in list(op.inputs) + list(op.outputs):
            if t >= 0 and t in first:
                last[t] = max(last[t], scope)
    for t in graph.outputs:
        last[t] = n_ops
    buffers = []
    for t in sorted(first):
        info = graph.tensors[t]
        if info.constant or info.variable or info.nbytes == 0:
            continue
        buffers.append(Buffer(tensor=t, size=_align(info.nbytes), first=first[t], last=last[t]))
    return buffers


def greedy_layout(buffers: Sequence[Buffer]) -> list[Buffer]:
    """Offsets for ``buffers`` as TFLM's `GreedyMemoryPlanner` assigns them (same order returned)."""
    # TFLM fills its sort array from the tail (online buffers are written backwards), then
    # bubble-sorts it stably by size: equal sizes end up in reverse order of addition.
    order = sorted(reversed(range(len(buffers))), key=lambda i: -buffers[i].size)
    placed: list[Buffer] = []  # kept sorted by offset
    offsets = [0] * len(buffers)
    for i in order:
        want = buffers[i]
        candidate = 0
        for other in placed:
            if not other.overlaps_in_time(want.first, want.last):
                continue
            if other.offset - candidate >= want.size:
                break  # the gap before this buffer fits
            candidate = max(candidate, other.offset + other.size)
        offsets[i] = candidate
        placed.append(dataclasses.replace(want, offset=candidate))
        placed.sort(key=lambda b: b.offset)
    return [dataclasses.replace(b, offset=o) for b, o in zip(buffers, offsets)]


def plan_arena(model_bytes: bytes) -> ArenaPlan:
    """Plan the activation memory of ``model_bytes`` (a .tflite) as TFLite Micro would."""
    graph = read_graph(model_bytes)
    buffers = greedy_layout(lifetimes(graph))
    head = max((b.offset + b.size for b in buffers), default=0)
    scopes = range(len(graph.operators) + 1)
    peak = max((sum(b.size for b in buffers if b.first <= s <= b.last) for s in scopes), default=0)
    return ArenaPlan(buffers=tuple(buffers), head_bytes=head, peak_live_bytes=peak, subgraphs=graph.subgraphs)
