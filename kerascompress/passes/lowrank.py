"""`LowRank`: factorize Dense / EinsumDense / Conv2D layers, kept only where it pays.

Why per layer, and why measured: a factorization trades one layer for two. It always
cuts parameters at a low enough rank, but the extra layer costs a kernel launch, an
intermediate tensor and a less efficient matrix shape, so fewer MACs do not guarantee
a faster model. So for each layer the pass (1) picks a rank (kept spectral energy, a
parameter-ratio target, or given per layer; rounded to the target's channel multiple),
(2) refuses it when the estimated MACs do not fall, (3) checks the accuracy budget on
held-out data, and (4) when the target's runtime runs on this host, times the model
with and without the factorization interleaved in one run and keeps it only if it is
faster. When the target does not run here, decompositions are kept by the estimate and
the report says latency was not measured. The pipeline driver measures the whole pass
again afterwards and rolls it back if the model got slower.

The graph surgery lives in `kerascompress.graph.decompose`; this module only decides.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Optional, Sequence

import keras
import numpy as np

from kerascompress.errors import ConfigError
from kerascompress.graph import decompose as dec
from kerascompress.graph.counting import count_model
from kerascompress.graph.model_graph import ModelGraph, Node
from kerascompress.passes.base import Gate, ModelState, Pass, PassContext, PassOutput
from kerascompress.targets.target import Target
from kerascompress.training.finetune import finetune

_CONV_METHODS = ("auto", "channel", "spatial")


@dataclasses.dataclass
class Candidate:
    """One way to factorize one layer, with its estimated cost."""

    method: str
    rank: int
    full_rank: int
    energy: float
    before: dec.Cost
    after: dec.Cost

    @property
    def mac_ratio(self) -> float:
        """How many times fewer MACs (> 1 is fewer)."""
        return self.before.macs / max(1, self.after.macs)

    @property
    def param_ratio(self) -> float:
        return self.before.params / max(1, self.after.params)


def describe(class_name: str, layer: str, cand: Candidate) -> str:
    """Head of a report line, e.g. "Dense 'fc1' rank 96" (plus the conv method)."""
    how = f" ({cand.method})" if cand.method != "svd" else ""
    return f"{class_name} '{layer}' rank {cand.rank}{how}"


def judge(
    head: str,
    cand: Candidate,
    target_name: str,
    speedup: Optional[float] = None,
    accuracy_drop: Optional[float] = None,
    budget: Optional[float] = None,
    min_speedup: float = 1.0,
    min_mac_ratio: float = 1.0,
    not_measured: str = "",
) -> tuple[bool, str]:
    """Keep a factorization or not, and the sentence that says why.

    A pure function of the estimate, the accuracy drop and the measured speed-up
    (``speedup`` = latency without / latency with; None when not measured) so the
    decision rule can be tested with any timings. ``not_measured`` says why latency
    was not measured (default: the target does not run on this host).
    """
    macs = f"{cand.mac_ratio:.2f}x fewer MACs" if cand.mac_ratio >= 1 else f"{1 / cand.mac_ratio:.2f}x MORE MACs"
    if not cand.mac_ratio > min_mac_ratio:
        need = f" (needs > {min_mac_ratio:.2f}x)" if min_mac_ratio > 1 else ""
        return False, f"{head}: {macs}{need} by the estimate: kept original"
    if accuracy_drop is not None and budget is not None and accuracy_drop > budget:
        return False, (
            f"{head}: {macs} but accuracy falls {accuracy_drop * 100:.2f} points "
            f"(budget {budget * 100:.2f}): kept original"
        )
    if speedup is None:
        return True, (
            f"{head}: {macs}, {cand.param_ratio:.2f}x fewer parameters; latency not measured "
            f"({not_measured or target_name + ' does not run on this host'}): decomposed by the estimate"
        )
    if speedup < min_speedup:
        return False, f"{head}: {macs} but {speedup:.2f}x speed on {target_name}: kept original"
    return True, f"{head}: {macs}, {speedup:.2f}x speed on {target_name}: decomposed"


class LowRank(Pass):
    """Factorize Dense, EinsumDense (plain matrix products) and Conv2D layers by SVD.

    Rank choice, in order of precedence: ``ranks`` (per layer, by name or nested path
    "sub/layer"), then ``param_ratio`` (each factorized layer gets at most
    1/param_ratio of its parameters), then ``energy`` (the smallest rank keeping that
    fraction of the kernel's squared singular values). Ranks are rounded to the
    target's ``channel_multiple`` (up for energy and given ranks, down for a ratio).

    ``conv_method``: "auto" tries the channel (k x k to r, then 1 x 1) and the spatial
    (k x 1 then 1 x k) factorizations and keeps the one that is faster when measured
    (fewer MACs otherwise). ``layers`` / ``exclude`` restrict which layers are tried;
    layers under ``min_params`` parameters are left alone (not worth a measurement).
    ``max_accuracy_drop`` is the held-out accuracy (or, without labels, top-1
    agreement) the pass may lose against the model it receives; with fine-tuning the
    per-layer check uses ``max_accuracy_drop_before_finetune`` (default 5x) and the
    budget is checked again after fine-tuning. ``min_speedup``: measured speed-up a
    factorization must reach to stay (default 1.05: a margin over timing noise, so a
    layer is only swapped for a clear win). ``measure``: "auto" times on the target when it
    runs here; False never times (decisions by estimate).
    """

    name = "lowrank"
    tf_keras_unsupported = (
        "low-rank factorization needs a Keras 3 model: it rewrites the Keras 3 layer graph. Rebuild the model with "
        "Keras 3 to use it"
    )

    def __init__(
        self,
        energy: float = 0.9,
        param_ratio: Optional[float] = None,
        ranks: Optional[Mapping[str, int]] = None,
        conv_method: str = "auto",
        layers: Optional[Sequence[str]] = None,
        exclude: Sequence[str] = (),
        min_params: int = 4096,
        max_accuracy_drop: float = 0.01,
        max_accuracy_drop_before_finetune: Optional[float] = None,
        min_speedup: float = 1.05,
        min_mac_ratio: float = 1.0,
        measure: Any = "auto",
        latency_runs: int = 60,
        eval_samples: int = 1000,
        finetune_epochs: int = 0,
        distill: bool = True,
        finetune_learning_rate: float = 1e-4,
    ) -> None:
        if not 0 < energy <= 1:
            raise ConfigError(f"LowRank energy must be in (0, 1], got {energy}")
        if param_ratio is not None and param_ratio <= 1:
            raise ConfigError(f"LowRank param_ratio must be > 1 (e.g. 4 = four times fewer), got {param_ratio}")
        if conv_method not in _CONV_METHODS:
            raise ConfigError(f"LowRank conv_method must be one of {_CONV_METHODS}, got {conv_method!r}")
        if measure not in ("auto", True, False):
            raise ConfigError(f"LowRank measure must be 'auto', True or False, got {measure!r}")
        for k, v in (ranks or {}).items():
            if int(v) < 1:
                raise ConfigError(f"LowRank rank for {k!r} must be >= 1, got {v}")
        self.energy = float(energy)
        self.param_ratio = None if param_ratio is None else float(param_ratio)
        self.ranks = {str(k): int(v) for k, v in (ranks or {}).items()}
        self.conv_method = conv_method
        self.layers = None if layers is None else list(layers)
        self.exclude = list(exclude)
        self.min_params = int(min_params)
        self.max_accuracy_drop = float(max_accuracy_drop)
        self.max_accuracy_drop_before_finetune = max_accuracy_drop_before_finetune
        self.min_speedup = float(min_speedup)
        self.min_mac_ratio = float(min_mac_ratio)
        self.measure = measure
        self.latency_runs = int(latency_runs)
        self.eval_samples = int(eval_samples)
        self.finetune_epochs = int(finetune_epochs)
        self.distill = bool(distill)
        self.finetune_learning_rate = float(finetune_learning_rate)

    # ----------------------------------------------------------------- protocol
    def gate(self, target: Target, state: ModelState) -> Gate:
        if target.runs_here():
            why = (
                f"fewer parameters everywhere; latency verified per layer by measurement on {target.name}'s "
                "runtime on this host (a factorization that is not faster is not kept)"
            )
        else:
            why = (
                f"fewer parameters everywhere; {target.name} does not run on this host, so latency is NOT verified: "
                "factorizations are kept by their estimated MACs"
            )
        return Gate.allow("size+latency", why)

    def apply(self, state: ModelState, ctx: PassContext) -> PassOutput:
        run = _Run(self, state, ctx)
        return run.execute()

    # ------------------------------------------------------------ rank choice
    def choose_rank(self, node: Node, factors: dec.SVD, key_names: Sequence[str], multiple: int) -> int:
        """The rank for one layer and method, rounded to ``multiple``, capped at full rank."""
        full = factors.full_rank
        multiple = max(1, int(multiple))
        given = next((self.ranks[k] for k in key_names if k in self.ranks), None)
        if given is not None:
            r = _round_up(given, multiple)
        elif self.param_ratio is not None:
            before = dec.layer_cost(node).params
            bias = before - int(node.weights[0].size)
            per_rank = max(1, dec.decomposed_cost(node, factors.method, 1).params - bias)
            r = int(math.floor((before / self.param_ratio - bias) / per_rank))
            r = max(multiple, (r // multiple) * multiple)
        else:
            r = _round_up(factors.rank_for_energy(self.energy), multiple)
        return int(max(1, min(r, full)))


def _round_up(r: int, multiple: int) -> int:
    return int(max(multiple, int(math.ceil(r / multiple)) * multiple))


class _Run:
    """State of one `LowRank.apply`: the graph so far, the data and the timings."""

    def __init__(self, p: LowRank, state: ModelState, ctx: PassContext) -> None:
        self.p, self.state, self.ctx = p, state, ctx
        self.target = ctx.target
        self.timed = p.measure is not False and ctx.measures_latency
        self.graph = ModelGraph.from_keras(state.model)
        self.model = state.model
        self.x_eval, self.y_eval, self.data_note = self._eval_data()
        self.reference = _predict(state.model, self.x_eval)
        self.base_score = _score(self.reference, self.reference, self.y_eval)
        self._artifact: Optional[Any] = None  # the current model as the target runs it
        self.finetuning = p.finetune_epochs > 0
        if p.max_accuracy_drop_before_finetune is not None:
            self.layer_budget = float(p.max_accuracy_drop_before_finetune)
        else:
            self.layer_budget = p.max_accuracy_drop * (5 if self.finetuning else 1)

    # ------------------------------------------------------------------ data
    def _eval_data(self) -> tuple[Any, Optional[np.ndarray], str]:
        data = self.ctx.data
        n = self.p.eval_samples
        if data is not None:
            x, y = data.selection(n)
            what = "accuracy on training data not used for calibration" if y is not None \
                else "top-1 agreement with the model before the pass"
            return x, (None if y is None else np.asarray(y)), what
        rng = np.random.default_rng(self.ctx.seed)
        xs = [rng.standard_normal((64,) + tuple(d or 1 for d in t.shape[1:])).astype(np.float32)
              for t in self.state.model.inputs]
        return (xs[0] if len(xs) == 1 else xs), None, "fidelity on random inputs (no data given)"

    # -------------------------------------------------------------- measuring
    def _build(self, model: keras.Model) -> Any:
        """``model`` as the target runs it, at the state's precision (asked of the driver)."""
        return self.ctx.build(self.state.replace(model=model))

    def current_artifact(self) -> Any:
        if self._artifact is None:
            self._artifact = self._build(self.model)
        return self._artifact

    # ------------------------------------------------------------ candidates
    def layers(self) -> list[tuple[str, Node, str]]:
        """(graph layer name, first node, original path) of every layer to try, in graph order."""
        wanted = None if self.p.layers is None else set(self.p.layers)
        excluded = set(self.p.exclude)
        out, seen = [], set()
        for node in self.graph.nodes.values():
            if node.layer_name in seen or node.is_input:
                continue
            seen.add(node.layer_name)
            path = node.path or node.layer_name
            names = {node.layer_name, path}
            if wanted is not None and not names & wanted:
                continue
            if names & excluded:
                continue
            out.append((node.layer_name, node, path))
        return out

    def candidates(self, node: Node, path: str) -> list[Candidate]:
        methods = dec.methods_for(node)
        if node.class_name == "Conv2D" and self.p.conv_method != "auto":
            methods = [m for m in methods if m == self.p.conv_method]
        before = dec.layer_cost(node)
        cands = []
        for m in methods:
            f = dec.svd(node, m)
            r = self.p.choose_rank(node, f, (path, node.layer_name), self.target.channel_multiple)
            cands.append(Candidate(m, r, f.full_rank, f.energy(r), before, dec.decomposed_cost(node, m, r)))
        return sorted(cands, key=lambda c: c.after.macs)

    # ----------------------------------------------------------------- driver
    def execute(self) -> PassOutput:
        progress = self.ctx.progress
        report: dict[str, dict] = {}
        replacements: dict[str, list[str]] = {}
        for lname, node, path in self.layers():
            entry = self.decide_layer(lname, node, path)
            if entry is None:
                continue
            report[path] = entry
            if entry["status"] == "decomposed":
                replacements[path] = entry["replacement"]
            progress(f"lowrank: {entry['reason']}")
        details: dict[str, Any] = {
            "layers": report,
            "replacements": replacements,
            "decomposed": len(replacements),
            "kept": sum(1 for e in report.values() if e["status"] != "decomposed"),
            "latency_measured": self.timed,
            "accuracy_metric": self.data_note,
            "target": self.target.name,
        }
        if not self.timed:
            details["note"] = (
                f"latency not measured: {self.target.name} does not run on this host"
                if self.p.measure is not False else "latency not measured (measure=False)"
            ) + "; decompositions were kept by their estimated MACs"
        model = self.model
        if replacements and self.finetuning:
            model, ft = self._finetune(model)
            details["finetune"] = ft
        before = dec_cost_total(self.state.model)
        after = dec_cost_total(model)
        details["params_before"], details["params_after"] = before.params, after.params
        details["macs_before"], details["macs_after"] = before.macs, after.macs
        if model is self.state.model:
            return PassOutput(self.state, details)
        return PassOutput(self.state.replace(model=model), details)

    def decide_layer(self, lname: str, node: Node, path: str) -> Optional[dict]:
        p = self.p
        if not dec.methods_for(node):
            if node.class_name in ("Dense", "EinsumDense", "Conv2D"):
                return {"status": "kept", "class": node.class_name,
                        "reason": f"{node.class_name} '{path}': {dec.unsupported_reason(node)}: kept original"}
            return None
        params = dec.layer_cost(node).params
        if params < p.min_params:
            return {"status": "kept", "class": node.class_name, "params": params,
                    "reason": f"{node.class_name} '{path}': {params} parameters < min_params={p.min_params}: kept original"}
        cands = self.candidates(node, path)
        entry: dict[str, Any] = {"class": node.class_name, "candidates": []}
        survivors: list[tuple[Candidate, ModelGraph, keras.Model, float, str, list]] = []
        reasons = []
        for c in cands:
            head = describe(node.class_name, path, c)
            info = _cand_info(c)
            entry["candidates"].append(info)
            ok, why = judge(head, c, self.target.name, min_mac_ratio=p.min_mac_ratio)
            if not ok:
                info["reason"] = why
                reasons.append(why)
                continue
            g = self.graph.copy()
            new = dec.decompose(g, lname, c.method, c.rank)
            model = g.to_keras(name=self.state.model.name)
            drop = self.base_score - _score(self.reference, _predict(model, self.x_eval), self.y_eval)
            info["accuracy_drop"] = round(float(drop), 6)
            ok, why = judge(head, c, self.target.name, accuracy_drop=drop, budget=self.layer_budget,
                            min_mac_ratio=p.min_mac_ratio)
            if not ok:
                info["reason"] = why
                reasons.append(why)
                continue
            survivors.append((c, g, model, float(drop), head, new))
            info["replacement"] = new
        if not survivors:
            entry.update(status="kept", reason=reasons[0] if len(reasons) == 1 else "; ".join(reasons))
            return entry
        speed: dict[int, Optional[float]] = {i: None for i in range(len(survivors))}
        best, not_measured, built = 0, "", {}  # default: fewest MACs
        if self.timed:
            try:
                built = {"before": self.current_artifact()}
                for i, (c, g, model, _, _, _) in enumerate(survivors):
                    built[f"c{i}"] = self._build(model)
                stats = self.ctx.time(built, runs=p.latency_runs)
            except Exception as e:  # noqa: BLE001 - a runtime failure must not lose the whole pass
                not_measured = f"timing on {self.target.name} failed: {type(e).__name__}: {str(e)[:200]}"
                entry["latency_error"] = not_measured
            else:
                base = stats["before"]
                for i in range(len(survivors)):
                    speed[i] = base / max(stats[f"c{i}"], 1e-9)
                    entry["candidates"][cands.index(survivors[i][0])]["speedup"] = round(speed[i], 4)
                best = max(speed, key=lambda i: speed[i])
                entry["latency_ms_before"] = round(base, 5)
                entry["latency_ms_after"] = round(stats[f"c{best}"], 5)
        c, g, model, drop, head, new = survivors[best]
        keep, why = judge(head, c, self.target.name, speedup=speed[best], accuracy_drop=drop,
                          budget=self.layer_budget, min_speedup=p.min_speedup, min_mac_ratio=p.min_mac_ratio,
                          not_measured=not_measured)
        entry.update(_cand_info(c))
        entry.update(speedup=None if speed[best] is None else round(speed[best], 4), accuracy_drop=round(drop, 6),
                     reason=why)
        if keep:
            self.graph, self.model = g, model
            self._artifact = built.get(f"c{best}")
            entry.update(status="decomposed", replacement=list(new))
        else:
            entry.update(status="kept")
        return entry

    # -------------------------------------------------------------- fine-tune
    def _finetune(self, model: keras.Model) -> tuple[keras.Model, dict]:
        data = self.ctx.data
        if data is None or not (data.can_train or (self.p.distill and self.ctx.teacher is not None)):
            return model, {"status": "skipped", "reason": "no training data"}
        teacher = self.ctx.teacher if self.p.distill else None
        tuned = finetune(model, data, epochs=self.p.finetune_epochs, teacher=teacher,
                         learning_rate=self.p.finetune_learning_rate, progress=self.ctx.progress, seed=self.ctx.seed,
                         **self.ctx.fine_tuning(model))
        drop = self.base_score - _score(self.reference, _predict(tuned, self.x_eval), self.y_eval)
        info = {"status": "done", "epochs": self.p.finetune_epochs, "distilled": teacher is not None,
                "accuracy_drop_after": round(float(drop), 6)}
        if drop > self.p.max_accuracy_drop:
            info["warning"] = (f"after fine-tuning the {self.data_note} is still {drop * 100:.2f} points lower "
                               f"(budget {self.p.max_accuracy_drop * 100:.2f})")
        return tuned, info


# ------------------------------------------------------------------- helpers
def dec_cost_total(model: keras.Model) -> dec.Cost:
    """Total parameters and MACs of a model (MACs from the shared counter)."""

    c = count_model(model)
    return dec.Cost(int(c.params), int(c.macs))


def _cand_info(c: Candidate) -> dict:
    return {
        "method": c.method, "rank": c.rank, "full_rank": c.full_rank, "energy_kept": round(c.energy, 6),
        "params_before": c.before.params, "params_after": c.after.params,
        "macs_before": c.before.macs, "macs_after": c.after.macs, "mac_ratio": round(c.mac_ratio, 4),
    }


def _predict(model: keras.Model, x: Any) -> np.ndarray:
    out = model.predict(x, batch_size=256, verbose=0)
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (list, tuple)):
        out = out[0]
    return np.asarray(out)


def _score(reference: np.ndarray, out: np.ndarray, labels: Optional[np.ndarray]) -> float:
    """Higher is better: accuracy with labels; top-1 agreement (classifiers) or 1 - relative RMS error."""
    if out.ndim >= 2 and out.shape[-1] > 1:
        pred = out.argmax(-1)
        if labels is not None:
            y = labels.argmax(-1) if labels.ndim == out.ndim and labels.shape[-1] == out.shape[-1] else labels
            return float(np.mean(pred.reshape(-1) == np.asarray(y).reshape(-1)))
        return float(np.mean(pred == reference.argmax(-1)))
    denom = float(np.sqrt(np.mean(reference.astype(np.float64) ** 2))) or 1.0
    return 1.0 - float(np.sqrt(np.mean((out.astype(np.float64) - reference) ** 2))) / denom




__all__ = ["Candidate", "LowRank", "describe", "judge"]
