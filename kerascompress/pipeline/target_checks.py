"""What the target itself demands of the result, checked on the files and written into the report.

Three things a run's metrics do not show: whether the model fits a microcontroller's flash
and RAM (`flash_bytes`, `ram_bytes`; RAM as TFLite Micro would plan the activations,
`export.tflite_memory`), which operators an accelerator's compiler leaves on the CPU (its
published op table, `targets.op_tables`), and what was not built here because the
target's toolchain is elsewhere, with the command that builds it. The driver calls
`check_target_fit` once, after the passes.
"""
from __future__ import annotations

import dataclasses
import shutil
from typing import Optional

from kerascompress.export.tflite_graph import read_graph
from kerascompress.export.tflite_memory import plan_arena
from kerascompress.pipeline.artifacts import Artifact
from kerascompress.pipeline.report import Report
from kerascompress.targets.op_tables import OpTable, op_table
from kerascompress.targets.target import Target

#: Where the arena's tail was measured (it is not planned: see export.tflite_memory).
TAIL_MEASURED = "benchmarks/results/tflm_arena.md"


@dataclasses.dataclass(frozen=True)
class MemoryFit:
    """A .tflite against a target's flash and RAM budgets (None = no budget)."""

    model_bytes: int
    arena_head_bytes: int
    flash_bytes: Optional[int]
    ram_bytes: Optional[int]

    @property
    def fits_flash(self) -> bool:
        return self.flash_bytes is None or self.model_bytes <= self.flash_bytes

    @property
    def fits_ram(self) -> bool:
        return self.ram_bytes is None or self.arena_head_bytes <= self.ram_bytes

    @property
    def fits(self) -> bool:
        return self.fits_flash and self.fits_ram


def memory_fit(model_bytes: bytes, target: Target) -> MemoryFit:
    """Size and planned activation memory of ``model_bytes`` against ``target``'s budgets."""
    return MemoryFit(len(model_bytes), plan_arena(model_bytes).head_bytes, target.flash_bytes, target.ram_bytes)


def check_target_fit(report: Report, target: Target, baseline: Artifact, final: Artifact) -> None:
    """Memory budgets, op support and the toolchain the target needs, into ``report``; never raises
    (the end of a run must write its report), a check that fails is a note."""
    if final.kind != "tflite":
        return
    try:
        _check(report, target, baseline, final)
    except Exception as exc:  # noqa: BLE001 - reported, the run's outputs still get written
        report.notes.append(f"{target.name} checks could not run on the final model: {type(exc).__name__}: {exc}")


def _check(report: Report, target: Target, baseline: Artifact, final: Artifact) -> None:
    if target.flash_bytes is not None or target.ram_bytes is not None:
        _report_memory(report, target, baseline, final)
    table = op_table(target.arch)
    if table is not None:
        report.notes.append(op_support_note(final.data, table, target))
    toolchain = toolchain_note(target, memory_fit(final.data, target) if target.device == "mcu" else None)
    if toolchain:
        report.notes.append(toolchain)


def _report_memory(report: Report, target: Target, baseline: Artifact, final: Artifact) -> None:
    if target.flash_bytes is not None:
        for step in report.steps:
            size = step.after.size_bytes if step.after is not None else None
            if size is None or step.status not in ("applied", "rolled back"):
                continue
            step.details["fits_flash"] = size <= target.flash_bytes
            if size > target.flash_bytes:
                report.notes.append(
                    f"{step.name}: its result ({size:,} B, {step.status}) does not fit {target.name}'s "
                    f"{target.flash_bytes:,} B of flash"
                )
    base, fit = memory_fit(baseline.data, target), memory_fit(final.data, target)
    if target.flash_bytes is not None:
        report.constraints_met["fits_flash"] = fit.fits_flash
    if target.ram_bytes is not None:
        report.constraints_met["fits_ram"] = fit.fits_ram
    budget = []
    if target.flash_bytes is not None:
        budget.append(f"{fit.model_bytes:,} B of {target.flash_bytes:,} B flash")
    if target.ram_bytes is not None:
        budget.append(f"{fit.arena_head_bytes:,} B of activations (TFLite Micro greedy arena plan) of "
                      f"{target.ram_bytes:,} B RAM")
    missing = [what for what, ok in (("flash", fit.fits_flash), ("RAM", fit.fits_ram)) if not ok]
    verdict = "fits" if fit.fits else f"does NOT fit ({' and '.join(missing)})"
    report.notes.append(
        f"{target.name} memory: the final model {verdict}: {'; '.join(budget)} (float32 baseline: "
        f"{base.model_bytes:,} B, {base.arena_head_bytes:,} B of activations). The arena also needs its tail and any "
        f"kernel scratch buffers: a 2-5 KB tail for the small models in {TAIL_MEASURED}"
    )


def op_support_note(model_bytes: bytes, table: OpTable, target: Target) -> str:
    """Which operators of the model the accelerator's compiler does not map, from its op table."""
    ops = read_graph(model_bytes).op_names()
    unmapped = [(i, op) for i, op in enumerate(ops) if table.row(op) is None]
    unverified = sorted({op for op in ops if table.row(op) is not None and not table.row(op).verified})
    limited = {op: table.row(op).limitations.rstrip(".") + ("" if table.row(op).verified else " (unverified row)")
               for op in ops if table.row(op) is not None and table.row(op).limitations.lower() != "none listed"}
    text = f"{target.name} op table ({table.source}): "
    if unmapped:
        names = sorted({op for _, op in unmapped})
        first, first_op = unmapped[0]
        text += (
            f"{', '.join(names)} {'is' if len(names) == 1 else 'are'} not in the table and would run on the CPU; with the "
            f"default compile the first unmapped operator (#{first} {first_op}) and the {len(ops) - first - 1} after it "
            f"run on the CPU too, {len(ops) - first} of {len(ops)} operators (edgetpu_compiler -a may map later supported "
            "operators to further Edge TPU subgraphs)"
        )
    else:
        text += f"all {len(ops)} operators are in the table, so the compiler can map them"
    if limited:
        text += "; mapped only within the table's limitations: " + "; ".join(f"{op}: {why}" for op, why in sorted(limited.items()))
    if unverified:
        text += f"; rows not read in any copy of the table (confirm on coral.ai): {', '.join(unverified)}"
    if target.arch == "edgetpu":
        text += ". Accuracy here was measured with LiteRT's CPU kernels on the uncompiled model"
    return text


def toolchain_note(target: Target, fit: Optional[MemoryFit] = None) -> Optional[str]:
    """What was not built here for ``target`` and the command that builds it (None when nothing is missing)."""
    if target.arch == "edgetpu":
        compiler = shutil.which("edgetpu_compiler")
        where = (f"edgetpu_compiler is at {compiler} but kerascompress does not run it" if compiler
                 else "edgetpu_compiler is not on this host (it runs on x86-64 Debian/Ubuntu, https://coral.ai/docs/edgetpu/compiler/)")
        return f"Edge TPU model not compiled here: {where}; compile with: edgetpu_compiler model.tflite"
    if target.device == "mcu":
        arena = f" and a tensor arena of at least {fit.arena_head_bytes:,} B plus its tail" if fit is not None else ""
        return (
            f"{target.name} firmware not built here: embed the model with: xxd -i model.tflite > model_data.cc, then "
            f"build it into your TensorFlow Lite Micro application{arena} (kTensorArenaSize)"
        )
    return None
