"""From the original to the smallest model, one cut at a time: where a unit of cost is cheapest.

Starting from full widths, each step narrows the one group whose next width saves the
most cost (a cost model's prediction: milliseconds, MACs or bytes) per unit of damage
(a `DamageProbe`) and records the configuration. The result is a path of configurations,
each predicted cheaper than the last, along which the search bisects with real
fine-tuning and verdicts. Cutting where a millisecond costs the least accuracy, and
never uniformly, is what NetAdapt showed pays on real devices.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Mapping, Sequence

from kerascompress.search.widths import Widths


@dataclasses.dataclass(frozen=True)
class PathPoint:
    """One configuration on the path: widths, predicted cost and predicted damage."""

    widths: Widths
    cost: float
    damage: float


def allocation_path(
    cost: Callable[[Widths], float],
    steps: Mapping[int, Sequence[int]],
    damage: Callable[[int, int], float],
) -> list[PathPoint]:
    """The greedy path from full widths (``steps[g][0]``) to every group at its narrowest step.

    ``cost(widths)`` predicts a configuration's cost; ``damage(group, width)`` the harm
    of that group at that width (0 at full width). A cut that saves nothing is taken
    only after every cut that saves something.
    """
    index = {g: 0 for g in steps}
    widths: Widths = {g: int(ws[0]) for g, ws in steps.items()}
    hurt = {g: 0.0 for g in steps}
    now = cost(widths)
    path = [PathPoint(dict(widths), now, 0.0)]
    while True:
        best, best_key, best_cost = None, None, now
        for g, ws in steps.items():
            if index[g] + 1 >= len(ws):
                continue
            w = int(ws[index[g] + 1])
            trial = cost({**widths, g: w})
            saved = now - trial
            extra = max(damage(g, w) - hurt[g], 1e-9)
            key = (saved > 0, saved / extra if saved > 0 else saved)
            if best_key is None or key > best_key:
                best, best_key, best_cost = (g, w), key, trial
        if best is None:
            return path
        g, w = best
        index[g] += 1
        widths[g] = w
        now = best_cost
        hurt[g] = max(damage(g, w), hurt[g])
        path.append(PathPoint(dict(widths), now, sum(hurt.values())))


def uniform_path(cost: Callable[[Widths], float], steps: Mapping[int, Sequence[int]]) -> list[PathPoint]:
    """The control: every group at the same fraction of its width (rounded to its steps), widest first."""
    points = []
    for k in range(0, 101, 5):
        fraction = 1.0 - k / 100.0
        widths = {}
        for g, ws in steps.items():
            want = ws[0] * fraction
            widths[g] = int(min(ws, key=lambda w: (abs(w - want), -w)))
        if not points or widths != points[-1].widths:
            points.append(PathPoint(widths, cost(widths), 0.0))
    return points
