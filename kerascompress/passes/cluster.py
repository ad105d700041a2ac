"""`Cluster`: k-means weight sharing of convolution and dense kernels.

Each kernel (or each output channel of it) keeps at most ``n_clusters`` distinct values.
What that buys depends on the runtime: LiteRT, XNNPACK and TensorRT compute from dense
weights, so the file keeps its raw size and the model its speed; only the *compressed*
(gzip) file shrinks, because a kernel with k values has at most log2(k) bits of entropy
per weight. Only a runtime that computes from palettized weights turns clustering into
size in memory and speed, and the gate says so.

Per-tensor clusters do not survive every export intact: the TFLite converter folds a
following BatchNormalization into the kernel (one scale per output channel) and int8
quantization is per output channel, so a per-tensor-clustered kernel ends up with at
most k values *per output channel*, up to min(256, k x channels) per tensor. Cluster
per channel (``per_channel=True``) when the per-tensor count matters;
`kerascompress.export.tflite_inspect.tflite_kernel_stats` measures what the exported file
really holds (the driver adds it to the report).
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import keras
import numpy as np

from kerascompress.errors import ConfigError
from kerascompress.legacy.tfmot import cluster_tf_keras
from kerascompress.metrics.weight_stats import unique_per_channel
from kerascompress.models.copy import copy_model
from kerascompress.passes.base import Gate, ModelState, PassContext, PassOutput
from kerascompress.passes.weight_constraint import WeightConstraintPass
from kerascompress.targets.target import Target
from kerascompress.training.constrained import ClusterConstraint, finetune_from_context

INITS = ("kmeans++", "linear", "density")

#: Layer types whose kernels are clustered, and the attribute names of those kernels.
_KERNEL_ATTRS = {
    "Dense": ("kernel",),
    "Conv1D": ("kernel",),
    "Conv2D": ("kernel",),
    "Conv3D": ("kernel",),
    "Conv1DTranspose": ("kernel",),
    "Conv2DTranspose": ("kernel",),
    "Conv3DTranspose": ("kernel",),
    "DepthwiseConv1D": ("kernel",),
    "DepthwiseConv2D": ("kernel",),
    "SeparableConv1D": ("depthwise_kernel", "pointwise_kernel"),
    "SeparableConv2D": ("depthwise_kernel", "pointwise_kernel"),
}


# --------------------------------------------------------------------------- k-means


def _init_centroids(values: np.ndarray, k: int, init: str, rng: np.random.Generator) -> np.ndarray:
    lo, hi = float(values.min()), float(values.max())
    if init == "linear":
        return np.linspace(lo, hi, k)
    if init == "density":  # equal numbers of weights between centroids: follows the CDF
        return np.quantile(values, (np.arange(k) + 0.5) / k)
    # k-means++: each next centroid drawn with probability proportional to D(x)^2
    sample = values if values.size <= 20000 else rng.choice(values, 20000, replace=False)
    centroids = [float(sample[rng.integers(sample.size)])]
    d2 = (sample - centroids[0]) ** 2
    for _ in range(1, k):
        total = d2.sum()
        if total <= 0:
            break
        c = float(sample[rng.choice(sample.size, p=d2 / total)])
        centroids.append(c)
        d2 = np.minimum(d2, (sample - c) ** 2)
    return np.sort(np.asarray(centroids))


def kmeans_1d(values: np.ndarray, k: int, init: str = "kmeans++", iterations: int = 50,
              seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(centroids, labels): Lloyd's k-means on scalars.

    In one dimension each cluster is an interval between midpoints of sorted centroids,
    so assignment is a binary search (fast enough for million-weight kernels in numpy).
    Returns at most ``k`` centroids, sorted; empty clusters are dropped.
    """
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    values = np.asarray(values, np.float64).reshape(-1)
    distinct = np.unique(values)
    if distinct.size <= k:  # already at most k values: nothing to share
        return distinct, np.searchsorted(distinct, values)
    rng = np.random.default_rng(seed)
    centroids = np.unique(_init_centroids(values, k, init, rng))
    labels = np.zeros(values.size, np.int64)
    for _ in range(iterations):
        edges = (centroids[1:] + centroids[:-1]) / 2
        labels = np.searchsorted(edges, values)
        counts = np.bincount(labels, minlength=centroids.size)
        sums = np.bincount(labels, weights=values, minlength=centroids.size)
        keep = counts > 0
        new = sums[keep] / counts[keep]
        if new.size == centroids.size and np.allclose(new, centroids, rtol=0, atol=1e-12):
            centroids = new
            break
        centroids = np.unique(new)
    edges = (centroids[1:] + centroids[:-1]) / 2
    labels = np.searchsorted(edges, values)
    used = np.unique(labels)
    remap = np.full(centroids.size, -1, np.int64)
    remap[used] = np.arange(used.size)
    return centroids[used], remap[labels]


def _channel_axes(layer: keras.layers.Layer, attr: str, ndim: int) -> tuple[int, ...]:
    """Axes of a kernel that index its output channels."""
    kind = type(layer).__name__
    if kind.endswith("Transpose"):
        return (ndim - 2,)  # (..., out, in)
    if kind.startswith("Depthwise") or attr == "depthwise_kernel":
        return (ndim - 2, ndim - 1)  # (..., in, multiplier): each input channel is its own output group
    return (ndim - 1,)


def cluster_kernel(
    kernel: np.ndarray,
    n_clusters: int,
    channel_axes: Optional[Sequence[int]] = None,
    init: str = "kmeans++",
    preserve_zeros: bool = True,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Cluster one kernel; returns (clustered, centroids, segments, frozen).

    ``channel_axes`` given: each output channel (the slice over those axes) gets its own
    ``n_clusters`` centroids. ``segments`` (kernel-shaped) indexes ``centroids`` (flat,
    all channels concatenated); ``frozen`` marks the exact-zero centroid kept when
    ``preserve_zeros`` and the kernel has exact zeros (so clustering a pruned kernel
    does not refill its zeros).
    """
    kernel = np.asarray(kernel, np.float32)
    if channel_axes:
        axes = [a % kernel.ndim for a in channel_axes]
        rest = [a for a in range(kernel.ndim) if a not in axes]
        moved = np.transpose(kernel, axes + rest)
        groups = moved.reshape(int(np.prod([kernel.shape[a] for a in axes])), -1)
    else:
        axes, rest = [], list(range(kernel.ndim))
        groups = kernel.reshape(1, -1)
    all_centroids: list[np.ndarray] = []
    all_frozen: list[np.ndarray] = []
    seg_groups = np.zeros(groups.shape, np.int64)
    offset = 0
    for g, row in enumerate(groups):
        zero = (row == 0) if preserve_zeros else np.zeros(row.shape, bool)
        has_zero = bool(zero.any())
        k = n_clusters - 1 if has_zero else n_clusters
        labels = np.zeros(row.size, np.int64)
        if (~zero).any() and k >= 1:
            cents, lab = kmeans_1d(row[~zero], k, init=init, seed=seed + g)
        else:
            cents, lab = np.zeros(0), np.zeros(0, np.int64)
        if has_zero:
            labels[zero] = 0
            labels[~zero] = lab + 1
            cents = np.concatenate([[0.0], cents])
            frozen = np.zeros(cents.size, bool)
            frozen[0] = True
        else:
            labels[:] = lab
            frozen = np.zeros(cents.size, bool)
        seg_groups[g] = labels + offset
        offset += cents.size
        all_centroids.append(cents)
        all_frozen.append(frozen)
    centroids = np.concatenate(all_centroids).astype(np.float32)
    frozen = np.concatenate(all_frozen)
    if channel_axes:
        moved_shape = [kernel.shape[a] for a in axes + rest]
        segments = np.transpose(seg_groups.reshape(moved_shape), np.argsort(axes + rest))
    else:
        segments = seg_groups.reshape(kernel.shape)
    return centroids[segments], centroids, segments.astype(np.int32), frozen


# --------------------------------------------------------------------------- the pass


class Cluster(WeightConstraintPass):
    """k-means weight sharing: at most ``n_clusters`` values per kernel (or per channel).

    ``init``: "kmeans++" (default), "linear" (evenly spaced between min and max, keeps
    the outliers) or "density" (at quantiles of the weights). ``preserve_zeros`` keeps
    exact zeros (from an earlier Sparsity pass) at zero. Fine-tuning keeps the sharing
    exact (gradients summed per centroid). The skip and training settings are those of
    `WeightConstraintPass`.
    """

    name = "cluster"
    kernel_attrs = _KERNEL_ATTRS

    def __init__(
        self,
        n_clusters: int = 16,
        per_channel: bool = False,
        init: str = "kmeans++",
        preserve_zeros: bool = True,
        **settings: Any,
    ) -> None:
        if int(n_clusters) < 2:
            raise ConfigError(f"Cluster: n_clusters must be >= 2, got {n_clusters}")
        if init not in INITS:
            raise ConfigError(f"Cluster: init must be one of {', '.join(INITS)}, got {init!r}")
        super().__init__(**settings)
        self.n_clusters = int(n_clusters)
        self.per_channel = bool(per_channel)
        self.init = init
        self.preserve_zeros = bool(preserve_zeros)
        self.name = f"cluster:{self.n_clusters}" + (":per_channel" if self.per_channel else "")

    def gate(self, target: Target, state: ModelState) -> Gate:
        source = target.source("clustered_weights")
        cite = f" (source: {source})" if source else ""
        if target.supports("clustered_weights"):
            return Gate.allow("size+latency", f"{target.name}'s runtime computes from palettized (clustered) weights{cite}")
        return Gate.allow(
            "compressed-size",
            f"compressed (gzip) size only: {target.name}'s runtime computes dense, so the raw file size and the "
            f"latency do not change{cite}",
        )

    def apply_keras(self, state: ModelState, ctx: PassContext) -> PassOutput:
        model = copy_model(state.model)
        kernels = self.kernels(model)
        skip = self.skipped(kernels)
        layers_out: dict[str, Any] = {}
        constraints = []
        for layer, attr, var in kernels:
            key = f"{layer.name}.{attr}"
            if key in skip:
                layers_out[key] = {"clustered": False, "reason": skip[key]}
                continue
            value = keras.ops.convert_to_numpy(var)
            axes = _channel_axes(layer, attr, value.ndim)
            before = int(np.unique(value).size)
            clustered, centroids, segments, frozen = cluster_kernel(
                value, self.n_clusters, axes if self.per_channel else None, self.init, self.preserve_zeros, ctx.seed
            )
            var.assign(clustered)
            constraints.append(ClusterConstraint(var, centroids, segments, frozen))
            layers_out[key] = {"clustered": True, "shape": list(value.shape), "unique_before": before}
        ft = finetune_from_context(model, constraints, ctx, self.finetune_epochs, self, ctx.fine_tuning(model))
        for layer, attr, var in kernels:
            key = f"{layer.name}.{attr}"
            if layers_out[key].get("clustered"):
                value = keras.ops.convert_to_numpy(var)
                layers_out[key]["unique_values"] = int(np.unique(value).size)
                layers_out[key]["max_unique_per_channel"] = unique_per_channel(
                    value, _channel_axes(layer, attr, value.ndim))
        n_done = sum(1 for v in layers_out.values() if v.get("clustered"))
        details: dict[str, Any] = {
            "n_clusters": self.n_clusters,
            "per_channel": self.per_channel,
            "init": self.init,
            "kernels_clustered": n_done,
            "kernels_skipped": len(layers_out) - n_done,
            "layers": layers_out,
            "finetune": ft.to_dict() if ft else None,
            "does_not_buy": _does_not_buy(ctx.target),
            "export_note": (
                "int8 export quantizes per output channel (and TFLite folds BatchNorm into kernels), so a per-tensor "
                f"clustered kernel holds <= {self.n_clusters} values per output channel, not per tensor; use "
                "the report's 'artifact' entry for the exported counts"
            ) if not self.per_channel else "",
        }
        if self.finetune_epochs > 0 and ft is None:
            details["finetune_skipped"] = "no labelled training data in the pipeline"
        return PassOutput(state.replace(model=model), details)

    def apply_tfmot(self, state: ModelState, ctx: PassContext) -> PassOutput:
        """A tf_keras (Keras 2) model: tfmot's clustering."""
        if self.per_channel:
            raise ConfigError("per-channel clustering of tf_keras models is not offered through tfmot here")
        x, y = self.tfmot_data(ctx)
        model, details = cluster_tf_keras(state.model, self.n_clusters, self.init, x, y, self.finetune_epochs,
                                          self.batch_size, self.learning_rate, self.skip_layers)
        details["does_not_buy"] = _does_not_buy(ctx.target)
        return PassOutput(state.replace(model=model), details)


def _does_not_buy(target: Target) -> str:
    if target.supports("clustered_weights"):
        return ""
    return (
        f"raw file size and latency: {target.name}'s runtime ({target.runtime}) stores and computes dense weights; "
        f"the gain is in the compressed (gzip) artifact only"
    )
