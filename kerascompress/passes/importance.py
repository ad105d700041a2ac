"""Channel importance: how much each channel of a `ChannelGroup` matters.

A group's channels are removed together from every layer they flow through, so each
is scored over the whole group: the score of every member layer (each normalised by
its own mean, so layers of different scale weigh alike) is averaged. Low scores go
first. Weight norms need no data; the Taylor score (gradient x activation) does.

Criteria are looked up by name in a registry, so `register_importance` adds one that
``ChannelPruning(criterion=...)`` (and a YAML recipe) can name like a built-in.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Optional

import numpy as np

from kerascompress.data.samples import as_list, index_samples, n_samples
from kerascompress.errors import ConfigError, DataError
from kerascompress.graph.channel_groups import ChannelGroups
from kerascompress.graph.layer_rules import BatchNormRule, ProducerRule, weight_names
from kerascompress.training.losses import looks_like_probabilities, task_loss

#: ``fn(graph, groups, model, x, y) -> {group id: one score per channel}``; higher scores are kept.
ImportanceFn = Callable[[Any, ChannelGroups, Any, Any, Any], Mapping[int, np.ndarray]]


@dataclasses.dataclass(frozen=True)
class Criterion:
    """A registered importance criterion: how it scores, and whether it needs data to."""

    score: ImportanceFn
    needs_data: bool = False


_REGISTRY: dict[str, Criterion] = {}
#: Names of the known criteria (built-in and registered), live: ``name in CRITERIA``.
CRITERIA = _REGISTRY.keys()
BUILTIN_CRITERIA = ("l1", "l2", "bn_gamma", "taylor")


def register_importance(name: str, fn: ImportanceFn, *, needs_data: bool = False) -> None:
    """Make ``fn`` available as ``ChannelPruning(criterion=name)``.

    ``fn(graph, groups, model, x, y)`` gets the `ModelGraph`, its `ChannelGroups`, the
    Keras model the graph was read from, and calibration inputs and labels (both None
    unless ``needs_data``; labels may be None even then). It returns, for each prunable
    group id it scores, one float per channel of the group; a group it leaves out is not
    pruned. Registering a name again replaces it; the built-in names cannot be taken.
    """
    if not isinstance(name, str) or not name:
        raise ConfigError(f"an importance criterion needs a non-empty name, got {name!r}")
    if name in BUILTIN_CRITERIA and name in _REGISTRY:
        raise ConfigError(f"{name!r} is a built-in importance criterion; register yours under another name")
    if not callable(fn):
        raise ConfigError(f"importance criterion {name!r}: expected a function, got {type(fn).__name__}")
    _REGISTRY[name] = Criterion(fn, bool(needs_data))


def check_criterion(name: str) -> None:
    """Raise `ConfigError` listing the known criteria when ``name`` is not one of them."""
    if name not in _REGISTRY:
        raise ConfigError(f"unknown importance criterion {name!r}; choose one of {', '.join(_REGISTRY)}")


def criterion_needs_data(name: str) -> bool:
    """Whether scoring by ``name`` needs calibration data."""
    check_criterion(name)
    return _REGISTRY[name].needs_data


def _kernel_norms(node: Any, rule: ProducerRule, p: int) -> Optional[np.ndarray]:
    """Per-output-channel Lp norm of a producer's kernel (bias excluded)."""
    names = weight_names(node)
    if rule.kernel not in names:
        return None
    k = np.asarray(node.weights[names.index(rule.kernel)], np.float64)
    k = np.moveaxis(k, rule.out_axis, -1).reshape(-1, k.shape[rule.out_axis])
    return np.abs(k).sum(0) if p == 1 else np.sqrt((k**2).sum(0))


def _accumulate(groups: ChannelGroups, scores: dict, counts: dict, node_name: str, values: np.ndarray) -> None:
    """Add one member's per-channel values (normalised by their mean) into its groups' scores."""
    m = groups.maps.get((node_name, 0))
    if m is None or len(m) != len(values):
        return
    gid, idx = groups.group_indices(m)
    mean = float(np.mean(values)) or 1.0
    for g in np.unique(gid):
        if g not in scores:
            continue
        sel = gid == g
        np.add.at(scores[g], idx[sel], values[sel] / mean)
        counts[g] += 1


def _finish(scores: dict, counts: dict) -> dict[int, np.ndarray]:
    return {g: s / max(counts[g], 1) for g, s in scores.items()}


def weight_importance(graph: Any, groups: ChannelGroups, criterion: str = "l1") -> dict[int, np.ndarray]:
    """Scores per prunable group id from weights only ("l1", "l2" or "bn_gamma").

    "bn_gamma" uses |gamma| of the BatchNormalization layers in the group (network
    slimming); a group with no BatchNormalization falls back to L1.
    """
    if criterion not in ("l1", "l2", "bn_gamma"):
        raise ConfigError(f"unknown weight criterion {criterion!r}; choose l1, l2 or bn_gamma")
    scores = {g.id: np.zeros(g.size) for g in groups.prunable}
    counts = {g: 0 for g in scores}
    if criterion == "bn_gamma":
        for name in groups.order:
            if isinstance(groups.rules[name], BatchNormRule):
                node = graph.nodes[name]
                names = weight_names(node)
                if "gamma" in names:
                    _accumulate(groups, scores, counts, name, np.abs(np.asarray(node.weights[names.index("gamma")])))
    p = 2 if criterion == "l2" else 1
    for g in groups.prunable:
        if counts[g.id]:
            continue  # scored by BN gamma
        for name in g.producers:
            rule = groups.rules.get(name)
            if isinstance(rule, ProducerRule):
                norms = _kernel_norms(graph.nodes[name], rule, p)
                if norms is not None:
                    _accumulate(groups, {g.id: scores[g.id]}, counts, name, norms)
    return _finish(scores, counts)


def taylor_importance(
    model: Any,
    graph: Any,
    groups: ChannelGroups,
    x: Any,
    y: Any = None,
    batches: int = 4,
    batch_size: int = 32,
) -> dict[int, np.ndarray]:
    """First-order Taylor scores: (sum over a channel of activation x gradient)^2, batch-averaged.

    For a layer linear in its per-channel parameters (conv filter and bias, BN gamma and
    beta), sum(activation * dL/dactivation) over a channel equals sum(w * dL/dw) over
    that channel's parameters, so we need gradients of weights only. ``model`` must be
    the model ``graph`` was read from. Without labels the model's own top class is the
    target (classifiers only).
    """
    import keras
    import tensorflow as tf


    if x is None or n_samples(x) == 0:
        raise DataError("the Taylor criterion needs data: give a few batches of inputs (and labels)")
    members: list[tuple[str, list[tuple[Any, int]]]] = []  # node -> [(variable, out axis)]
    for name in groups.order:
        node, rule = graph.nodes[name], groups.rules[name]
        if node.layer is None:
            continue
        by_name = {v.path.split("/")[-1]: v for v in node.layer.weights}
        if isinstance(rule, ProducerRule) and not isinstance(rule, BatchNormRule):
            vs = [(by_name[rule.kernel], rule.out_axis)] if rule.kernel in by_name else []
            vs += [(by_name["bias"], -1)] if "bias" in by_name else []
        elif isinstance(rule, BatchNormRule):
            vs = [(by_name[k], -1) for k in ("gamma", "beta") if k in by_name]
        else:
            continue
        if vs:
            members.append((name, vs))
    variables = [v for _, vs in members for v, _ in vs]
    n = min(n_samples(x), batches * batch_size)
    per_member = {name: [] for name, _ in members}
    for start in range(0, n, batch_size):
        xb = index_samples(x, np.arange(start, min(n, start + batch_size)))
        with tf.GradientTape() as tape:
            outs = as_list(model(xb, training=False))
            if y is not None:
                ys = as_list(y) if isinstance(y, (list, tuple, dict)) else [y]
                yb = [np.asarray(a)[start : start + len(next(iter(as_list(xb))))] for a in ys]
            else:
                yb = []
                for out in outs:
                    if out.shape[-1] <= 1:
                        raise DataError("the Taylor criterion needs labels for a model with non-class outputs")
                    yb.append(np.argmax(keras.ops.convert_to_numpy(out), -1))
            loss = 0.0
            for out, t in zip(outs, yb):
                loss += task_loss(t, out, looks_like_probabilities(keras.ops.convert_to_numpy(out)))
        grads = tape.gradient(loss, variables)
        k = 0
        for name, vs in members:
            total = None
            for v, axis in vs:
                g = grads[k]
                k += 1
                if g is None:
                    continue
                wg = np.moveaxis(np.asarray(v.numpy() * np.asarray(g), np.float64), axis, -1)
                s = wg.reshape(-1, wg.shape[-1]).sum(0)
                total = s if total is None else total + s
            if total is not None:
                per_member[name].append(total**2)
    scores = {g.id: np.zeros(g.size) for g in groups.prunable}
    counts = {g: 0 for g in scores}
    for name, vals in per_member.items():
        if vals:
            _accumulate(groups, scores, counts, name, np.mean(vals, axis=0) + 1e-12)
    return _finish(scores, counts)


def channel_importance(
    graph: Any,
    groups: ChannelGroups,
    criterion: str = "l1",
    model: Any = None,
    x: Any = None,
    y: Any = None,
    batches: int = 4,
) -> dict[int, np.ndarray]:
    """Scores per prunable group id, by ``criterion`` (a name in `CRITERIA`)."""
    check_criterion(criterion)
    if criterion == "taylor":  # the one built-in with an option of its own
        if model is None:
            raise ConfigError("the Taylor criterion needs the model the graph was read from")
        return taylor_importance(model, graph, groups, x, y, batches=batches)
    return _checked(criterion, groups, _REGISTRY[criterion].score(graph, groups, model, x, y))


def _checked(criterion: str, groups: ChannelGroups, scores: Mapping[int, Any]) -> dict[int, np.ndarray]:
    """A criterion's scores as float arrays, refused with the reason when they cannot rank the channels."""
    sizes = {g.id: g.size for g in groups.prunable}
    out: dict[int, np.ndarray] = {}
    for gid, values in dict(scores).items():
        if gid not in sizes:
            raise ConfigError(f"importance criterion {criterion!r} scored group {gid!r}, which is not a prunable group")
        v = np.asarray(values, dtype=np.float64)
        if v.shape != (sizes[gid],) or not np.isfinite(v).all():
            raise ConfigError(
                f"importance criterion {criterion!r} gave group {gid} scores of shape {v.shape}; it needs "
                f"{sizes[gid]} finite values, one per channel"
            )
        out[gid] = v
    return out


def _weight_criterion(name: str) -> ImportanceFn:
    def score(graph: Any, groups: ChannelGroups, model: Any, x: Any, y: Any) -> dict[int, np.ndarray]:
        return weight_importance(graph, groups, name)

    return score


def _taylor(graph: Any, groups: ChannelGroups, model: Any, x: Any, y: Any) -> dict[int, np.ndarray]:
    return taylor_importance(model, graph, groups, x, y)


for _name in ("l1", "l2", "bn_gamma"):
    register_importance(_name, _weight_criterion(_name))
register_importance("taylor", _taylor, needs_data=True)
