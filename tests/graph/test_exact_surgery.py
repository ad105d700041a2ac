"""Exact channel surgery on every layer kind the rules claim, found by a dead-channel oracle.

The oracle (issue 11, item 7): make half of every prunable channel space provably dead,
prune at a ratio that may remove only dead channels, and require the pruned model to
compute the same function. A channel is made dead by zeroing its weights in every layer
that creates it (kernel columns and bias) and in every layer that reads it through
weights (kernel rows), so no output depends on it whatever lies between (BatchNorm
offsets, sigmoid gates, ...). Pruning then scores channels by L1 norm, exactly as the
`ChannelPruning` pass does: a producer whose kernel is not scored (the SeparableConv bug),
a rule that slices the wrong axis or the wrong positions, or a coupling the rules miss,
each removes a live channel or keeps a dead one in the wrong place, and the outputs change.

How each layer class creates and reads channels is written here from Keras' weight
layouts, independently of `kerascompress.graph.layer_rules`.

Tolerance: the pruned model sums the same non-zero terms as the dead model, in float32,
possibly in another order (a narrower GEMM/conv blocks differently); that moves results
by a few float32 ulps per accumulation, so outputs must agree to 1e-5 of the output's
scale (observed: <= 2e-6 on these models). A wrong cut moves them by 1e-2 or more.
"""
from __future__ import annotations

from typing import Any, Callable

import keras
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from keras import layers as L

from kerascompress.graph.channel_groups import find_channel_groups
from kerascompress.graph.layer_rules import _RULES
from kerascompress.graph.model_graph import ModelGraph
from kerascompress.graph.prune_channels import prune_channels
from kerascompress.graph.traversal import node_and_index
from kerascompress.passes.importance import weight_importance
from kerascompress.passes.pruning import select_channels
from tests.helpers.exactness import randomize

RTOL = 1e-5
DEAD_FRACTION = 0.5

# ----------------------------------------------------------------------------- the oracle

#: Layer class -> (kernel, axis of output channels) for layers that create channels.
PRODUCES = {
    **{f"Conv{r}D": ("kernel", -1) for r in (1, 2, 3)},
    **{f"Conv{r}DTranspose": ("kernel", -2) for r in (1, 2, 3)},
    **{f"SeparableConv{r}D": ("pointwise_kernel", -1) for r in (1, 2)},
    "Dense": ("kernel", -1),
    "EinsumDense": ("kernel", -1),
    "Embedding": ("embeddings", -1),
}


def _zero(node: Any, name: str, axis: int, positions: np.ndarray) -> None:
    i = node.weight_names.index(name)
    w = np.array(node.weights[i], copy=True)
    index = [slice(None)] * w.ndim
    index[axis] = positions
    w[tuple(index)] = 0
    node.weights[i] = w


def _zero_inputs(node: Any, positions: np.ndarray) -> None:
    """Zero the weights through which ``node`` reads its input channels ``positions``."""
    cls = node.class_name
    if cls in ("Dense", "EinsumDense"):
        _zero(node, "kernel", 0, positions)
    elif cls.startswith("SeparableConv"):
        _zero(node, "depthwise_kernel", -2, positions)
    elif cls.endswith("Transpose"):
        _zero(node, "kernel", -1, positions)
    elif cls.startswith("Conv"):  # grouped: input channel c is row c % a of group c // a's filters
        i = node.weight_names.index("kernel")
        w = np.array(node.weights[i], copy=True)
        a, cout = w.shape[-2], w.shape[-1]
        groups = int(node.config.get("groups", 1) or 1)
        b = cout // groups
        for c in positions.tolist():
            g, off = divmod(int(c), a)
            w[..., off, g * b:(g + 1) * b] = 0
        node.weights[i] = w


CONSUMERS = {c for c in PRODUCES if c != "Embedding"}


def make_dead(model: keras.Model, seed: int) -> tuple[keras.Model, int]:
    """A copy of ``model`` with half of every prunable channel space dead; (model, dead channels)."""
    graph = ModelGraph.from_keras(model)
    groups = find_channel_groups(graph)
    rng = np.random.default_rng(seed)
    dead_units: list[int] = []
    for g in groups.prunable:
        k = int(g.size * DEAD_FRACTION)
        dead_units += g.units[rng.choice(g.size, k, replace=False)].tolist() if k else []
    dead_units_arr = np.asarray(dead_units, np.int64)
    for name in groups.order:
        node = graph.nodes[name]
        out_map = groups.maps.get((name, 0))
        if node.class_name in PRODUCES and out_map is not None:
            pos = np.flatnonzero(np.isin(out_map, dead_units_arr))
            if len(pos):
                kernel, axis = PRODUCES[node.class_name]
                _zero(node, kernel, axis, pos)
                if "bias" in node.weight_names:
                    _zero(node, "bias", -1, pos)
        if node.class_name in CONSUMERS and node.inputs:
            in_map = groups.maps.get(node_and_index(node.inputs[0]))
            if in_map is not None:
                pos = np.flatnonzero(np.isin(in_map, dead_units_arr))
                if len(pos):
                    _zero_inputs(node, pos)
    return graph.to_keras(), len(dead_units)


def inputs_for(model: keras.Model, n: int = 3, seed: int = 1) -> Any:
    rng = np.random.default_rng(seed)
    xs = []
    for t in model.inputs:
        shape = (n,) + tuple(t.shape[1:])
        if "int" in str(t.dtype):
            xs.append(rng.integers(0, VOCAB, shape).astype(str(t.dtype)))
        else:
            xs.append(rng.standard_normal(shape).astype("float32"))
    return xs if len(xs) > 1 else xs[0]


def outputs_of(model: keras.Model, x: Any) -> list[np.ndarray]:
    out = model(x, training=False)
    return [np.asarray(keras.ops.convert_to_numpy(o), np.float64) for o in keras.tree.flatten(out)]


def relative_error(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    return max(float(np.abs(p - q).max() / max(float(np.abs(q).max()), 1e-6)) for p, q in zip(a, b))


def check_dead_channels_pruned_exactly(model: keras.Model, seed: int = 0) -> dict[str, Any]:
    """Kill half of every channel space, prune by L1 at that ratio, assert nothing changed."""
    dead_model, n_dead = make_dead(model, seed)
    graph = ModelGraph.from_keras(dead_model)
    groups = find_channel_groups(graph)
    scores = weight_importance(graph, groups, "l1")
    keep = select_channels(groups, scores, DEAD_FRACTION, min_channels=1, multiple=1, max_ratio=0.9)
    removed = sum(groups.groups[gid].size - len(k) for gid, k in keep.items())
    assert removed == n_dead, f"pruning at {DEAD_FRACTION} removes {removed} channels, {n_dead} are dead"
    pruned = prune_channels(graph, groups, keep).to_keras()
    x = inputs_for(dead_model, seed=seed + 1)
    err = relative_error(outputs_of(pruned, x), outputs_of(dead_model, x))
    assert err < RTOL, f"removing only dead channels changed the outputs by {err:.3g} (relative max error)"
    return {"dead": n_dead, "error": err, "groups": groups, "pruned": pruned, "dead_model": dead_model}


# ----------------------------------------------------------------------------- layer kinds


class Draw:
    """Choices from hypothesis (``data.draw``) or a seeded numpy generator, behind one interface."""

    def __init__(self, data: Any = None, seed: int = 0) -> None:
        self.data = data
        self.rng = np.random.default_rng(seed)

    def int(self, lo: int, hi: int) -> int:
        if self.data is not None:
            return self.data.draw(st.integers(lo, hi))
        return int(self.rng.integers(lo, hi + 1))

    def pick(self, options: Any) -> Any:
        options = list(options)
        return options[self.int(0, len(options) - 1)]


VOCAB = 20


def _spatial(t: Any) -> tuple[int, ...]:
    return tuple(int(d) for d in t.shape[1:-1])


def _by_rank(name: str, r: int) -> Any:
    return getattr(L, name.replace("#", str(r)))


def _width(d: Draw) -> int:
    return d.int(2, 8)


def _grouped_conv(t, d, r, pool):
    c = int(t.shape[-1])
    g = d.pick([k for k in (2, 3, 4) if c % k == 0] or [1])
    return _by_rank("Conv#D", r)(g * d.int(1, 3), d.pick([1, 3]), padding="same", groups=g)(t)


def _einsum(t, d, r, pool):
    letters = "bcdefg"[: r + 1]
    out = letters[:-1] + "z"
    bias = d.pick(["z", None, letters[0]])  # a bias over a spatial axis is not per channel: it freezes
    return L.EinsumDense(f"a{letters},{letters[-1]}z->a{out}", output_shape=_spatial(t) + (_width(d),),
                         bias_axes=bias)(t)


def _same_shape_partner(t, d, pool):
    same = [p for p in pool if p is not t and tuple(p.shape) == tuple(t.shape)]
    if same and d.pick([True, False]):
        return d.pick(same)
    return _by_rank("Conv#D", len(_spatial(t)))(int(t.shape[-1]), 1)(t)  # a 1x1 projection of the same input


def _merge(t, d, r, pool):
    merge = d.pick([L.Add, L.Subtract, L.Multiply, L.Maximum, L.Minimum, L.Average])
    return merge()([t, _same_shape_partner(t, d, pool)])


def _concat_channels(t, d, r, pool):
    same = [p for p in pool if _spatial(p) == _spatial(t)]
    return L.Concatenate()([t, d.pick(same)])


def _concat_other_axis(t, d, r, pool):
    other = _same_shape_partner(t, d, pool)
    y = L.Concatenate(axis=1)([t, other])  # doubles the first spatial axis; channels coupled
    n = _spatial(t)[0]
    crop = ((0, n),) + ((0, 0),) * (r - 1)
    return _by_rank("Cropping#D", r)(crop[0] if r == 1 else crop)(y)


def _global_pool(t, d, r, pool):
    name = d.pick(["GlobalAveragePooling#D", "GlobalMaxPooling#D"])
    y = _by_rank(name, r)(keepdims=True)(t)
    return _by_rank("UpSampling#D", r)(_spatial(t)[0] if r == 1 else _spatial(t))(y)


def _up_pool(name):
    def build(t, d, r, pool):
        y = _by_rank("UpSampling#D", r)(2)(t)
        return _by_rank(name, r)(2)(y)

    return build


def _pad_crop(t, d, r, pool):
    return _by_rank("Cropping#D", r)(1)(_by_rank("ZeroPadding#D", r)(1)(t))


def _crop_pad(t, d, r, pool):
    return _by_rank("ZeroPadding#D", r)(1)(_by_rank("Cropping#D", r)(1)(t))


def _flatten_back(t, d, r, pool):
    return L.Reshape(tuple(t.shape[1:]))(L.Flatten()(t))


def _reshape_back(t, d, r, pool):
    positions = int(np.prod(_spatial(t)))
    return L.Reshape(tuple(t.shape[1:]))(L.Reshape((positions, int(t.shape[-1])))(t))


def _identity_like(t, d, r, pool):
    layer = d.pick([
        lambda: L.Dropout(0.3), lambda: _by_rank("SpatialDropout#D", r)(0.3), lambda: L.GaussianDropout(0.3),
        lambda: L.GaussianNoise(0.3), lambda: L.AlphaDropout(0.3), lambda: L.ActivityRegularization(0.01),
        lambda: L.Identity(),
    ])()
    return layer(t)


def _keras_ops(t, d, r, pool):
    """Bare keras.ops calls on symbolic tensors: element-wise ones carry channels, others freeze."""
    op = d.pick(["relu", "sigmoid", "tanh", "abs", "square", "add", "multiply", "maximum", "scalar", "flip"])
    ops = keras.ops
    if op in ("add", "multiply", "maximum"):
        return getattr(ops, op)(t, _same_shape_partner(t, d, pool))
    if op == "scalar":
        return ops.multiply(ops.add(t, 0.5), 2.0)
    if op == "flip":  # reverses the channels: pruning through it would be wrong, so it must freeze
        return ops.flip(t, axis=-1)
    return getattr(ops, op)(t)


def _per_channel(n: int, lo: float, hi: float) -> list[float]:
    return [float(v) for v in np.linspace(lo, hi, n)]


def _se(t, d, r, pool):
    c = int(t.shape[-1])
    s = _by_rank("GlobalAveragePooling#D", r)(keepdims=True)(t)
    s = _by_rank("Conv#D", r)(max(1, c // 2), 1, activation="relu")(s)
    s = _by_rank("Conv#D", r)(c, 1, activation="sigmoid")(s)
    return L.Multiply()([t, s])


#: kind -> (ranks it exists for, builder(t, draw, rank, pool) -> tensor of the same spatial shape, classes it uses)
KINDS: dict[str, tuple[tuple[int, ...], Callable, tuple[str, ...]]] = {
    "conv": ((1, 2, 3), lambda t, d, r, p: _by_rank("Conv#D", r)(_width(d), d.pick([1, 3]), padding="same")(t),
             ("Conv#D",)),
    "grouped_conv": ((1, 2, 3), _grouped_conv, ("Conv#D",)),
    "conv_transpose": ((1, 2, 3), lambda t, d, r, p: _by_rank("Conv#DTranspose", r)(_width(d), 3, padding="same")(t),
                       ("Conv#DTranspose",)),
    "depthwise": ((1, 2), lambda t, d, r, p: _by_rank("DepthwiseConv#D", r)(
        3, padding="same", depth_multiplier=d.int(1, 3), use_bias=d.pick([True, False]))(t), ("DepthwiseConv#D",)),
    "separable": ((1, 2), lambda t, d, r, p: _by_rank("SeparableConv#D", r)(
        _width(d), 3, padding="same", depth_multiplier=d.int(1, 3), use_bias=d.pick([True, False]))(t),
        ("SeparableConv#D",)),
    "dense": ((1, 2, 3), lambda t, d, r, p: L.Dense(_width(d))(t), ("Dense",)),
    "einsum_dense": ((1, 2, 3), _einsum, ("EinsumDense",)),
    "batch_norm": ((1, 2, 3), lambda t, d, r, p: L.BatchNormalization()(t), ("BatchNormalization",)),
    "layer_norm": ((1, 2, 3), lambda t, d, r, p: L.LayerNormalization(axis=d.pick([1, -1]))(t),
                   ("LayerNormalization",)),
    "relu": ((1, 2, 3), lambda t, d, r, p: L.ReLU()(t), ("ReLU",)),
    "leaky_relu": ((1, 2, 3), lambda t, d, r, p: L.LeakyReLU(0.2)(t), ("LeakyReLU",)),
    "elu": ((1, 2, 3), lambda t, d, r, p: L.ELU()(t), ("ELU",)),
    "prelu": ((1, 2, 3), lambda t, d, r, p: L.PReLU(alpha_initializer="random_normal")(t), ("PReLU",)),
    "activation": ((1, 2, 3), lambda t, d, r, p: L.Activation(d.pick(["relu", "tanh", "swish", "sigmoid",
                                                                       "softmax"]))(t), ("Activation",)),
    "softmax": ((1, 2, 3), lambda t, d, r, p: L.Softmax(axis=d.pick([1, -1]))(t), ("Softmax",)),
    "identity_like": ((1, 2, 3), _identity_like,
                      ("Dropout", "SpatialDropout#D", "GaussianDropout", "GaussianNoise", "AlphaDropout",
                       "ActivityRegularization", "Identity")),
    "pad_crop": ((1, 2, 3), _pad_crop, ("ZeroPadding#D", "Cropping#D")),
    "crop_pad": ((1, 2, 3), _crop_pad, ("ZeroPadding#D", "Cropping#D")),
    "up_maxpool": ((1, 2, 3), _up_pool("MaxPooling#D"), ("UpSampling#D", "MaxPooling#D")),
    "up_avgpool": ((1, 2, 3), _up_pool("AveragePooling#D"), ("UpSampling#D", "AveragePooling#D")),
    "global_pool": ((1, 2, 3), _global_pool, ("GlobalAveragePooling#D", "GlobalMaxPooling#D", "UpSampling#D")),
    "normalization": ((1, 2, 3), lambda t, d, r, p: L.Normalization(
        mean=_per_channel(int(t.shape[-1]), -0.5, 0.5), variance=_per_channel(int(t.shape[-1]), 0.5, 2.0))(t),
        ("Normalization",)),
    "rescaling": ((1, 2, 3), lambda t, d, r, p: L.Rescaling(
        scale=_per_channel(int(t.shape[-1]), 0.5, 1.5), offset=_per_channel(int(t.shape[-1]), -0.2, 0.2))(t),
        ("Rescaling",)),
    "attention": ((1, 2), lambda t, d, r, p: L.MultiHeadAttention(num_heads=2, key_dim=3)(t, t),
                  ("MultiHeadAttention",)),
    "merge": ((1, 2, 3), _merge, ("Add", "Subtract", "Multiply", "Maximum", "Minimum", "Average")),
    "concat_channels": ((1, 2, 3), _concat_channels, ("Concatenate",)),
    "concat_other_axis": ((1, 2, 3), _concat_other_axis, ("Concatenate", "Cropping#D")),
    "squeeze_excite": ((1, 2, 3), _se, ("GlobalAveragePooling#D", "Multiply")),
    "keras_ops": ((1, 2, 3), _keras_ops, ()),
    "flatten": ((1, 2, 3), _flatten_back, ("Flatten", "Reshape")),
    "reshape": ((1, 2, 3), _reshape_back, ("Reshape",)),
}

SPATIAL = {1: (8,), 2: (6, 6), 3: (4, 4, 4)}


def _covered_classes() -> set[str]:
    out = {"InputLayer", "Embedding"}  # Embedding: the token family's first layer
    for ranks, _, classes in KINDS.values():
        out |= {c.replace("#", str(r)) for c in classes for r in ranks}
    return out


def test_every_registered_layer_class_has_a_kind():
    """A rule added to layer_rules without a generator here fails this test."""
    exempt = {"Lambda"}  # frozen by design, and not rebuildable from a file
    in_keras = {name for name in _RULES if hasattr(L, name)}
    missing = in_keras - exempt - _covered_classes()
    assert not missing, f"layer classes with a rule but no generated case: {sorted(missing)}"


def _apply(kind: str, t: Any, d: Draw, pool: list) -> Any:
    ranks, build, _ = KINDS[kind]
    return build(t, d, len(_spatial(t)), pool)


def _head(leaves: list, r: int) -> Any:
    gap = _by_rank("GlobalAveragePooling#D", r)
    heads = [gap()(t) for t in leaves]
    return L.Dense(3)(heads[0] if len(heads) == 1 else L.Concatenate()(heads))


def _start(r: int, d: Draw, tokens: bool = False) -> tuple[Any, Any]:
    """The model input and a first tensor with a few channels."""
    if tokens:
        x = keras.Input(SPATIAL[1], dtype="int32")
        return x, L.Embedding(VOCAB, d.int(2, 6))(x)
    x = keras.Input(SPATIAL[r] + (d.int(1, 4),))
    return x, _by_rank("Conv#D", r)(d.int(3, 6), 3, padding="same")(x)


def kind_model(kind: str, r: int, seed: int = 0) -> keras.Model:
    """``kind`` alone in a chain, inside a residual add, under a squeeze-excite gate and beside a concat."""
    d = Draw(seed=seed)
    x, t = _start(r, d)
    alone = _apply(kind, t, d, [t])
    alone = _by_rank("Conv#D", r)(5, 1)(alone)  # a consumer of its channels
    inner = _apply(kind, alone, d, [t, alone])
    residual = L.Add()([inner, _by_rank("Conv#D", r)(int(inner.shape[-1]), 1)(alone)])
    gated = _se(_apply(kind, residual, d, [residual]), d, r, [])
    side = L.Concatenate()([gated, _apply(kind, gated, d, [gated])])
    return keras.Model(x, _head([side, residual], r))


def _kind_cases() -> list[tuple[str, int]]:
    return [(k, r) for k, (ranks, _, _) in KINDS.items() for r in ranks]


def test_every_kind_exact_in_one_model_per_rank():
    """Every kind, alone and coupled, in one model per rank (quick: the per-kind test is marked slow)."""
    for r in (1, 2, 3):
        d = Draw(seed=r)
        x, t = _start(r, d, tokens=(r == 1))
        pool = [t]
        for kind, (ranks, _, _) in KINDS.items():
            if r not in ranks:
                continue
            src = _by_rank("Conv#D", r)(6, 1)(pool[-1])  # a fresh channel space: a freezing kind freezes only it
            y = _apply(kind, src, d, pool + [src])
            if kind in ("conv", "separable", "dense") and tuple(y.shape) == tuple(src.shape):
                y = L.Add()([y, src])  # coupled through a residual
            pool.append(y)
        model = randomize(keras.Model(x, _head(pool[-3:], r)), seed=r)
        result = check_dead_channels_pruned_exactly(model, seed=r)
        assert result["dead"] > 60, "the model must have prunable channels for the oracle to mean anything"


@pytest.mark.slow
@pytest.mark.parametrize("kind,rank", _kind_cases())
def test_each_kind_exact_alone_and_coupled(kind, rank):
    model = randomize(kind_model(kind, rank, seed=rank), seed=rank)
    check_dead_channels_pruned_exactly(model, seed=rank)


# ----------------------------------------------------------------------------- named models (the issue's)


def separable_chain(use_bias: bool, depth_multiplier: int = 1, residual: bool = False) -> keras.Model:
    x = keras.Input((16, 16, 3))
    y = L.ReLU()(L.BatchNormalization()(L.Conv2D(32, 3, padding="same")(x)))
    s = L.SeparableConv2D(64, 3, padding="same", use_bias=use_bias, depth_multiplier=depth_multiplier)(y)
    if residual:
        s = L.Add()([s, L.Conv2D(64, 1)(y)])
    s = L.ReLU()(L.BatchNormalization()(s))
    return keras.Model(x, L.Dense(10)(L.GlobalAveragePooling2D()(s)))


@pytest.mark.parametrize("use_bias,depth_multiplier,residual",
                         [(True, 1, False), (False, 1, False), (True, 3, False), (False, 2, True)])
def test_separable_conv_chain_exact(use_bias, depth_multiplier, residual):
    """The issue's case: 76% output change before the fix (the pointwise kernel was never scored)."""
    model = randomize(separable_chain(use_bias, depth_multiplier, residual))
    result = check_dead_channels_pruned_exactly(model)
    assert result["dead"] == 16 + 32  # half of the conv's 32 and of the separable conv's 64 channels


def test_separable_conv_is_scored_by_its_pointwise_kernel():
    from kerascompress.passes.importance import weight_importance

    model = randomize(separable_chain(True))
    graph = ModelGraph.from_keras(model)
    groups = find_channel_groups(graph)
    scores = weight_importance(graph, groups, "l1")
    (sep_group,) = [g for g in groups.prunable if any("separable" in p for p in g.producers)]
    pointwise = graph.nodes[sep_group.producers[0]].weights[1]
    l1 = np.abs(pointwise).reshape(-1, 64).sum(0)
    np.testing.assert_allclose(scores[sep_group.id], l1 / l1.mean(), rtol=1e-6)


@pytest.mark.slow
def test_xception_exact():
    """The keras.applications architecture built from separable convolutions (104% change before the fix)."""
    model = randomize(keras.applications.Xception(input_shape=(71, 71, 3), weights=None, classes=10))
    check_dead_channels_pruned_exactly(model)


# ----------------------------------------------------------------------------- random DAGs


@st.composite
def random_dag(draw: Any) -> keras.Model:
    """A random DAG of every layer kind, in 1, 2 or 3 spatial dimensions or from integer tokens."""
    d = Draw(data=_DrawData(draw))
    family = d.pick(["1d", "2d", "3d", "tokens"])
    r = {"1d": 1, "2d": 2, "3d": 3, "tokens": 1}[family]
    x, t = _start(r, d, tokens=family == "tokens")
    pool = [t]
    for _ in range(d.int(2, 7)):
        kind = d.pick([k for k, (ranks, _, _) in KINDS.items() if r in ranks])
        src = d.pick(pool)
        y = _apply(kind, src, d, pool)
        coupling = d.pick(["none", "none", "residual", "concat", "se"])
        if coupling == "residual":
            y = L.Add()([y, _by_rank("Conv#D", r)(int(y.shape[-1]), 1)(src)])
        elif coupling == "concat":
            y = L.Concatenate()([y, src])
        elif coupling == "se":
            y = _se(y, d, r, pool)
        pool.append(y)
    leaves = pool[-2:] if len(pool) > 2 else pool[-1:]
    return keras.Model(x, _head(leaves, r))


class _DrawData:
    """Adapts a composite strategy's ``draw`` to the ``data.draw`` interface `Draw` expects."""

    def __init__(self, draw: Any) -> None:
        self.draw = draw


@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(model=random_dag(), seed=st.integers(0, 1000))
def test_random_dags_exact(model, seed):
    check_dead_channels_pruned_exactly(randomize(model, seed), seed=seed)


@pytest.mark.slow
@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(model=random_dag(), seed=st.integers(0, 1000))
def test_random_dags_exact_long_run(model, seed):
    check_dead_channels_pruned_exactly(randomize(model, seed), seed=seed)


def test_keras_ops_carry_channels_when_element_wise_and_freeze_otherwise():
    x = keras.Input((6, 6, 3))
    a = L.Conv2D(8, 3, padding="same", name="a")(x)
    b = L.Conv2D(8, 3, padding="same", name="b")(x)
    summed = keras.ops.relu(keras.ops.add(a, keras.ops.multiply(b, 2.0)))  # couples a and b
    c = L.Conv2D(8, 3, padding="same", name="c")(summed)
    flipped = keras.ops.flip(c, axis=-1)  # channel order reversed: c's channels must not be cut
    out = L.Dense(3)(L.GlobalAveragePooling2D()(L.Conv2D(6, 1, name="d")(flipped)))
    model = randomize(keras.Model(x, out))
    result = check_dead_channels_pruned_exactly(model)
    groups = result["groups"]
    prunable = sorted(sorted(g.producers) for g in groups.prunable)
    assert prunable == [["a", "b"], ["d"]]
    assert any("Keras op 'Flip'" in r for g in groups.frozen for r in g.frozen)
