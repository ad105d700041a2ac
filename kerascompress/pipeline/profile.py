"""``kerascompress profile``: measure a model's per-group latency table on the device it will run on.

For a target this host cannot stand in for, copy the model to the device, run
``kerascompress profile model.keras --out table.json`` there, and give the table to
``optimize(..., latency_table="table.json")``: the search then costs widths with the
device's own measurements instead of a MAC estimate. The table is measured at the
precision the model will ship in (int8 where the target has fast int8 kernels: float32
ratios mislead about where int8 time goes).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional, Union

import numpy as np

from kerascompress import targets as targets_lib
from kerascompress.data.bundle import DataBundle
from kerascompress.errors import UnsupportedOnTarget
from kerascompress.graph.channel_groups import find_channel_groups
from kerascompress.graph.model_graph import ModelGraph
from kerascompress.models.io import check_supported, load_model
from kerascompress.passes.base import ModelState
from kerascompress.passes.importance import channel_importance
from kerascompress.pipeline.measure import pass_context, random_inputs
from kerascompress.quant.plan import PrecisionPlan
from kerascompress.search.cost_model import CostModel, measured_model, model_signature
from kerascompress.search.features import CostFeatures
from kerascompress.search.widths import width_steps
from kerascompress.targets.target import Target


def shipping_precision(target: Target, has_data: bool = True) -> PrecisionPlan:
    """The precision the default recipe ships for ``target``: int8 where it is fast (and calibratable), else float32."""
    if target.supports("int8") and has_data:
        return PrecisionPlan("int8", int8_io=target.full_integer_only)
    return PrecisionPlan("float32")


def profile_latency(
    model: Any,
    target: Any = "auto",
    path: Optional[Union[str, Path]] = None,
    precision: Optional[PrecisionPlan] = None,
    calibration: Any = None,
    channel_multiple: Optional[int] = None,
    min_channels: int = 8,
    max_ratio: float = 0.875,
    configs: int = 12,
    runs: int = 40,
    progress: Callable[[str], None] = print,
) -> CostModel:
    """Measure ``model``'s latency table on this host for ``target`` and write it to ``path`` (JSON).

    ``target`` must be this host (``"auto"`` or a profile this host really is): a table
    is only worth what the machine it was timed on. ``calibration`` inputs set int8
    ranges (random inputs when None; ranges do not change latency).
    """
    tgt = targets_lib.resolve(target)
    if not tgt.runs_here():
        raise UnsupportedOnTarget(
            f"{tgt.name} does not run on this host, so its latency cannot be measured here: run "
            f"`kerascompress profile` on the device itself (target auto)"
        )
    original = load_model(model)
    check_supported(original)
    plan = precision or shipping_precision(tgt)
    if calibration is None:
        calibration = random_inputs(original, 64, seed=0)
        calibration = np.clip(calibration, -1, 1) if isinstance(calibration, np.ndarray) else calibration
    bundle = DataBundle(calibration, None, calibration, None, calibration_samples=64)
    ctx = pass_context(tgt, bundle, progress=progress)
    graph = ModelGraph.from_keras(original)
    groups = find_channel_groups(graph)
    multiple = int(channel_multiple or tgt.channel_multiple or 1)
    steps = {g.id: width_steps(g.size, multiple, min_channels, max_ratio) for g in groups.prunable}
    steps = {g: ws for g, ws in steps.items() if len(ws) > 1}
    scores = channel_importance(graph, groups, "l1")
    state = ModelState(original, plan)
    progress(f"profiling {original.name} on {tgt.name} at {plan.describe()}: {len(steps)} channel groups")
    table = measured_model(
        graph, groups, CostFeatures(graph, groups), scores, steps,
        build=lambda m: ctx.build(state.replace(model=m)),
        time=lambda artifacts: ctx.time(artifacts, runs=runs),
        signature=model_signature(original, groups),
        source=f"measured on the device ({tgt.name}, {tgt.runtime}, {plan.describe()}) by kerascompress profile",
        n_random=configs, name=original.name, target=tgt.name, precision=plan.describe(),
    )
    if path is not None:
        table.save(path)
        progress(f"latency table written to {path}")
    return table
