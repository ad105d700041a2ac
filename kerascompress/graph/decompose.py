"""Low-rank factorization of Dense, EinsumDense and Conv2D nodes: pure graph surgery.

Why a module of its own: the low-rank pass decides *whether* and *at which rank* to
factorize a layer (that needs the target, data and timings); this module only knows
*how*: which matrix of a layer's kernel to take the SVD of, what the two new layers
are, what they cost, and how to splice them into a `ModelGraph`. Nothing here knows
about targets or runtimes, so it is easy to test exactly.

Methods
  * ``"svd"`` (Dense, and EinsumDense when it is a plain matrix product over the last
    axis): ``x @ W`` with ``W ~ A @ B``, A: (in, r), B: (r, out); the first layer has no
    bias and no activation, the second keeps the original's bias and activation.
  * ``"channel"`` (Conv2D): a k x k convolution with r filters (the original's strides,
    padding and dilation), then a 1 x 1 convolution to the original filters; from the
    SVD of the kernel reshaped to (kh*kw*cin, cout).
  * ``"spatial"`` (Conv2D with a kernel larger than 1 in both directions): a kh x 1
    convolution with r filters, then a 1 x kw one; from the SVD of the kernel arranged as
    (kh*cin, kw*cout). Strides, padding and dilation split per axis, so at full rank it
    is exact also for "same" padding.

The singular values are split evenly (sqrt) between the two factors, which keeps the
two kernels' ranges alike (helps int8 quantization later).
"""
from __future__ import annotations

import copy
import dataclasses
from typing import Optional

import keras
import numpy as np

from kerascompress.graph.model_graph import ModelGraph, Node

METHODS = ("svd", "channel", "spatial")


@dataclasses.dataclass(frozen=True)
class Cost:
    """Parameters and multiply-accumulates per sample (batch excluded)."""

    params: int
    macs: int


@dataclasses.dataclass
class SVD:
    """Thin SVD of the matrix a method factorizes: ``matrix = u @ diag(s) @ vt``."""

    method: str
    u: np.ndarray
    s: np.ndarray
    vt: np.ndarray

    @property
    def full_rank(self) -> int:
        return int(self.s.shape[0])

    def energy(self, rank: int) -> float:
        """Fraction of the squared Frobenius norm kept at ``rank``."""
        sq = self.s.astype(np.float64) ** 2
        total = float(sq.sum())
        return 1.0 if total == 0 else float(sq[:rank].sum() / total)

    def rank_for_energy(self, energy: float) -> int:
        """The smallest rank that keeps at least ``energy`` of the squared norm."""
        sq = self.s.astype(np.float64) ** 2
        total = float(sq.sum())
        if total == 0:
            return 1
        cum = np.cumsum(sq) / total
        return int(min(self.full_rank, np.searchsorted(cum, energy - 1e-12) + 1))

    def factors(self, rank: int) -> tuple[np.ndarray, np.ndarray]:
        """(A, B) with ``A @ B`` the best rank-``rank`` approximation of the matrix."""
        rank = int(max(1, min(rank, self.full_rank)))
        root = np.sqrt(self.s[:rank])
        a = self.u[:, :rank] * root[None, :]
        b = root[:, None] * self.vt[:rank]
        return a, b


# ------------------------------------------------------------------- what applies
def plain_matmul_axes(equation: str) -> Optional[tuple[str, str]]:
    """(contracted, output) letters when an EinsumDense equation is ``x[..., c] @ W[c, d]``.

    E.g. "ab,bc->ac", "abc,cd->abd", "...b,bc->...c". None for anything else.
    """
    eq = equation.replace(" ", "")
    if "->" not in eq or eq.count(",") != 1:
        return None
    ins, out = eq.split("->")
    lhs, rhs = ins.split(",")
    if len(rhs) != 2 or "." in rhs:
        return None
    c, d = rhs
    if c == d or not lhs.endswith(c) or not out.endswith(d):
        return None
    rest = lhs[:-1]
    if rest != out[:-1] or c in rest or d in rest or d in lhs:
        return None
    return c, d


def methods_for(node: Node) -> list[str]:
    """The factorization methods that apply to ``node`` (empty when none does)."""
    cfg = node.config
    if cfg.get("lora_rank") or cfg.get("lora_enabled"):
        return []
    dtype = cfg.get("dtype")
    dname = dtype.get("config", {}).get("name", "") if isinstance(dtype, dict) else str(dtype or "")
    if any(q in str(dname) for q in ("int8", "int4", "float8")):
        return []  # already quantized in Keras: its weights are not a float kernel
    kernel = node.weights[0] if node.weights else None
    if node.class_name == "Dense":
        return ["svd"] if kernel is not None and kernel.ndim == 2 else []
    if node.class_name == "EinsumDense":
        axes = plain_matmul_axes(str(cfg.get("equation", "")))
        if axes is None or kernel is None or kernel.ndim != 2:
            return []
        bias_axes = cfg.get("bias_axes")
        if bias_axes not in (None, "", axes[1]):
            return []
        return ["svd"]
    if node.class_name == "Conv2D":
        if kernel is None or kernel.ndim != 4 or int(cfg.get("groups", 1) or 1) != 1:
            return []
        kh, kw = kernel.shape[:2]
        return ["channel", "spatial"] if (kh > 1 and kw > 1) else ["channel"]
    return []


def unsupported_reason(node: Node) -> str:
    """Why `methods_for` gives nothing, in words for a report."""
    if node.class_name not in ("Dense", "EinsumDense", "Conv2D"):
        return f"{node.class_name} layers are not factorized"
    if node.class_name == "EinsumDense":
        return f"equation {node.config.get('equation')!r} is not a plain matrix product over the last axis"
    if node.class_name == "Conv2D" and int(node.config.get("groups", 1) or 1) != 1:
        return "grouped convolution"
    return "LoRA-enabled or already-quantized layer"


def matrix(node: Node, method: str) -> np.ndarray:
    """The 2-D matrix whose SVD gives ``method``'s factors."""
    k = np.asarray(node.weights[0], dtype=np.float64)
    if method == "svd":
        return k
    kh, kw, cin, cout = k.shape
    if method == "channel":
        return k.reshape(kh * kw * cin, cout)
    if method == "spatial":
        return k.transpose(0, 2, 1, 3).reshape(kh * cin, kw * cout)
    raise ValueError(f"unknown method {method!r}; one of {METHODS}")


def svd(node: Node, method: str) -> SVD:
    """Thin SVD of ``matrix(node, method)``."""
    u, s, vt = np.linalg.svd(matrix(node, method), full_matrices=False)
    return SVD(method, u, s, vt)


# -------------------------------------------------------------------------- costs
def _positions(shape: tuple) -> int:
    """Number of output positions of a Dense-like layer (all dims but batch and the last)."""
    dims = list(shape[1:-1])
    return int(np.prod([int(d) for d in dims])) if dims else 1


def _conv_geometry(node: Node) -> tuple[int, int, int, int, bool]:
    """(H_out, W_out, H_in, W_in, channels_last) of a Conv2D node."""
    last = node.config.get("data_format", "channels_last") != "channels_first"
    ishape, oshape = node.input_shapes[0], node.output_shapes[0]
    if last:
        return int(oshape[1]), int(oshape[2]), int(ishape[1]), int(ishape[2]), True
    return int(oshape[2]), int(oshape[3]), int(ishape[2]), int(ishape[3]), False


def layer_cost(node: Node) -> Cost:
    """Parameters and MACs of a Dense / EinsumDense / Conv2D node as it is."""
    k = node.weights[0]
    bias = sum(int(np.prod(w.shape)) for w in node.weights[1:])
    if node.class_name in ("Dense", "EinsumDense"):
        pos = _positions(node.output_shapes[0])
        return Cost(int(k.size) + bias, pos * int(k.size))
    ho, wo, _, _, _ = _conv_geometry(node)
    return Cost(int(k.size) + bias, ho * wo * int(k.size))


def decomposed_cost(node: Node, method: str, rank: int) -> Cost:
    """Parameters and MACs of ``node`` factorized by ``method`` at ``rank``."""
    k = node.weights[0]
    bias = sum(int(np.prod(w.shape)) for w in node.weights[1:])
    r = int(rank)
    if method == "svd":
        n_in, n_out = k.shape
        w = r * (n_in + n_out)
        return Cost(w + bias, _positions(node.output_shapes[0]) * w)
    kh, kw, cin, cout = k.shape
    ho, wo, _, wi, _ = _conv_geometry(node)
    if method == "channel":
        return Cost(kh * kw * cin * r + r * cout + bias, ho * wo * (kh * kw * cin * r + r * cout))
    if method == "spatial":
        # The kh x 1 conv strides only along H, so it runs at the full input width.
        first, second = kh * cin * r, kw * r * cout
        return Cost(first + second + bias, ho * wi * first + ho * wo * second)
    raise ValueError(f"unknown method {method!r}; one of {METHODS}")


def breakeven_rank(node: Node, method: str) -> int:
    """The largest rank at which the factorization has strictly fewer MACs (0: none)."""
    base = layer_cost(node).macs
    lo, hi = 0, svd_rank_bound(node, method)
    while lo < hi:  # MACs grow linearly with the rank: bisect
        mid = (lo + hi + 1) // 2
        if decomposed_cost(node, method, mid).macs < base:
            lo = mid
        else:
            hi = mid - 1
    return lo


def svd_rank_bound(node: Node, method: str) -> int:
    """The full rank of ``method``'s matrix (without computing the SVD)."""
    k = node.weights[0]
    if method == "svd":
        return int(min(k.shape))
    kh, kw, cin, cout = k.shape
    return int(min(kh * kw * cin, cout)) if method == "channel" else int(min(kh * cin, kw * cout))


# ------------------------------------------------------------------------ surgery
def _base_config(node: Node) -> dict:
    cfg = copy.deepcopy(node.config)
    cfg.pop("build_config", None)
    return cfg


def _first_second(node: Node, method: str, rank: int, a: np.ndarray, b: np.ndarray):
    """(template layers, weight lists) of the two new layers."""
    cfg = _base_config(node)
    dtype = node.weights[0].dtype
    a, b = a.astype(dtype), b.astype(dtype)
    bias = [np.array(w, copy=True) for w in node.weights[1:]]
    linear = dict(activation="linear", use_bias=False, kernel_constraint=None, kernel_regularizer=None,
                  activity_regularizer=None)
    if node.class_name == "Dense":
        c1 = dict(cfg, units=int(rank), **linear)
        c2 = dict(cfg, kernel_constraint=None)
        return (keras.layers.Dense.from_config(c1), [a]), (keras.layers.Dense.from_config(c2), [b] + bias)
    if node.class_name == "EinsumDense":
        out = cfg.get("output_shape")
        out = [out] if isinstance(out, int) else list(out)
        c1 = dict(cfg, output_shape=out[:-1] + [int(rank)], bias_axes=None, activation="linear",
                  kernel_constraint=None, kernel_regularizer=None, activity_regularizer=None)
        c2 = dict(cfg, kernel_constraint=None)
        return (keras.layers.EinsumDense.from_config(c1), [a]), (keras.layers.EinsumDense.from_config(c2), [b] + bias)
    kh, kw, cin, cout = node.weights[0].shape
    strides = tuple(cfg.get("strides", (1, 1)))
    dil = tuple(cfg.get("dilation_rate", (1, 1)))
    if method == "channel":
        k1 = a.reshape(kh, kw, cin, rank)
        k2 = b.reshape(1, 1, rank, cout)
        c1 = dict(cfg, filters=int(rank), **linear)
        c2 = dict(cfg, kernel_size=(1, 1), strides=(1, 1), padding="valid", dilation_rate=(1, 1),
                  kernel_constraint=None)
    else:  # spatial
        k1 = a.reshape(kh, cin, rank)[:, None, :, :]
        k2 = b.reshape(rank, kw, cout).transpose(1, 0, 2)[None, :, :, :]
        c1 = dict(cfg, filters=int(rank), kernel_size=(kh, 1), strides=(strides[0], 1),
                  dilation_rate=(dil[0], 1), **linear)
        c2 = dict(cfg, kernel_size=(1, kw), strides=(1, strides[1]), dilation_rate=(1, dil[1]),
                  kernel_constraint=None)
    conv = keras.layers.Conv2D
    return (conv.from_config(c1), [np.ascontiguousarray(k1)]), (conv.from_config(c2), [np.ascontiguousarray(k2)] + bias)


def _middle_shape(node: Node, method: str, rank: int) -> tuple:
    """Shape of the tensor between the two new layers."""
    out = list(node.output_shapes[0]) if node.output_shapes else []
    if not out:
        return ()
    last = node.config.get("data_format", "channels_last") != "channels_first"
    ch = len(out) - 1 if (node.class_name != "Conv2D" or last) else 1
    out[ch] = int(rank)
    if method == "spatial" and node.input_shapes:
        w_axis = 2 if last else 3
        out[w_axis] = node.input_shapes[0][w_axis]
    return tuple(out)


def decompose(
    graph: ModelGraph, layer_name: str, method: str, rank: int, factors: Optional[SVD] = None
) -> list[str]:
    """Replace every call of layer ``layer_name`` by its two-layer factorization, in place.

    Returns the names of the two new layers (first, second). A shared layer (called
    several times) becomes two shared layers. ``factors`` may carry a precomputed
    `svd` of the layer for ``method``.
    """
    node_names = graph.nodes_of_layer(layer_name)
    if not node_names:
        raise KeyError(f"no layer named {layer_name!r} in the graph")
    node = graph.nodes[node_names[0]]
    if method not in methods_for(node):
        raise ValueError(f"layer {layer_name!r} ({node.class_name}) cannot be factorized by {method!r}: "
                         f"{unsupported_reason(node) if not methods_for(node) else 'use one of ' + str(methods_for(node))}")
    factors = factors or svd(node, method)
    rank = int(max(1, min(int(rank), factors.full_rank)))
    a, b = factors.factors(rank)
    (t1, w1), (t2, w2) = _first_second(node, method, rank, a, b)
    # The suffixes differ, so the two names can never collide with each other.
    name1, name2 = graph.unique_name(f"{layer_name}_lr1"), graph.unique_name(f"{layer_name}_lr2")
    proto1 = Node.create(t1, weights=w1, name=name1)
    proto2 = Node.create(t2, weights=w2, name=name2)
    shared = len(node_names) > 1
    for i, nname in enumerate(node_names):
        old = graph.nodes[nname]
        n1 = dataclasses.replace(proto1, name=f"{name1}@{i}" if shared else name1, inputs=[],
                                 call_args=None, call_kwargs={}, path="")
        n2 = dataclasses.replace(proto2, name=f"{name2}@{i}" if shared else name2, inputs=[],
                                 call_args=None, call_kwargs={}, path="")
        n1.input_shapes = list(old.input_shapes)
        n1.output_shapes = [_middle_shape(old, method, rank)]
        n2.input_shapes = list(n1.output_shapes)
        n2.output_shapes = list(old.output_shapes)
        n1.output_dtypes = n2.output_dtypes = list(old.output_dtypes)
        graph.replace_node(nname, [n1, n2])
    return [name1, name2]
