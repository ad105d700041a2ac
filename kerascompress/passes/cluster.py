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
`tflite_kernel_stats` measures what the exported file really holds.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import keras
import numpy as np

from kerascompress.export.tflite_inspect import kernel_summary
from kerascompress.metrics.weight_stats import unique_per_channel
from kerascompress.passes.base import Gate, ModelState, Pass, PassContext, PassOutput
from kerascompress.targets.target import Target

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


def clusterable_kernels(model: keras.Model) -> list[tuple[keras.layers.Layer, str, Any]]:
    """(layer, attribute, variable) for every kernel this pass knows how to cluster."""
    from kerascompress.graph.traversal import all_layers

    found = []
    for layer in all_layers(model):
        for attr in _KERNEL_ATTRS.get(type(layer).__name__, ()):
            var = getattr(layer, attr, None)
            if var is not None:
                found.append((layer, attr, var))
    return found


# --------------------------------------------------------------------------- the pass


class Cluster(Pass):
    """k-means weight sharing: at most ``n_clusters`` values per kernel (or per channel).

    ``init``: "kmeans++" (default), "linear" (evenly spaced between min and max, keeps
    the outliers) or "density" (at quantiles of the weights). ``skip_layers`` names
    layers to leave alone; ``skip_first`` / ``skip_last`` skip the first and last
    clusterable layer, which are small and sensitive. ``min_weights`` skips kernels
    smaller than that. ``preserve_zeros`` keeps exact zeros (from an earlier Sparsity
    pass) at zero. ``finetune_epochs`` > 0 runs cluster-preserving fine-tuning on the
    pipeline's training split (gradients summed per centroid), which needs labels.
    """

    name = "cluster"
    tf_keras_unsupported = None  # tf_keras models: see apply()

    def __init__(
        self,
        n_clusters: int = 16,
        per_channel: bool = False,
        init: str = "kmeans++",
        skip_layers: Sequence[str] = (),
        skip_first: bool = False,
        skip_last: bool = False,
        min_weights: int = 64,
        preserve_zeros: bool = True,
        finetune_epochs: int = 0,
        learning_rate: float = 1e-4,
        batch_size: int = 64,
        freeze_batchnorm: bool = False,
        distill_weight: float = 0.0,
        max_steps_per_epoch: Optional[int] = None,
    ) -> None:
        from kerascompress.errors import ConfigError

        if int(n_clusters) < 2:
            raise ConfigError(f"Cluster: n_clusters must be >= 2, got {n_clusters}")
        if init not in INITS:
            raise ConfigError(f"Cluster: init must be one of {', '.join(INITS)}, got {init!r}")
        self.n_clusters = int(n_clusters)
        self.per_channel = bool(per_channel)
        self.init = init
        self.skip_layers = tuple(skip_layers)
        self.skip_first = bool(skip_first)
        self.skip_last = bool(skip_last)
        self.min_weights = int(min_weights)
        self.preserve_zeros = bool(preserve_zeros)
        self.finetune_epochs = int(finetune_epochs)
        self.learning_rate = float(learning_rate)
        self.batch_size = int(batch_size)
        self.freeze_batchnorm = bool(freeze_batchnorm)
        self.distill_weight = float(distill_weight)
        self.max_steps_per_epoch = max_steps_per_epoch
        self.name = f"cluster:{self.n_clusters}" + (":per_channel" if self.per_channel else "")

    @property
    def needs_data(self) -> bool:  # type: ignore[override]
        return self.finetune_epochs > 0

    @property
    def needs_labels(self) -> bool:  # type: ignore[override]
        return self.finetune_epochs > 0

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

    def apply(self, state: ModelState, ctx: PassContext) -> PassOutput:
        from kerascompress.models.kinds import is_tf_keras_model

        if is_tf_keras_model(state.model):
            return self._apply_tfmot(state, ctx)
        from kerascompress.models.copy import copy_model
        from kerascompress.training.constrained import (
            ClusterConstraint,
            finetune_from_context,
        )

        model = copy_model(state.model)
        kernels = clusterable_kernels(model)
        skip = _skipped(kernels, self.skip_layers, self.skip_first, self.skip_last, self.min_weights)
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
        ft = finetune_from_context(model, constraints, ctx, self.finetune_epochs, self)
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
                "tflite_kernel_stats() on the artifact for the exported counts"
            ) if not self.per_channel else "",
        }
        if self.finetune_epochs > 0 and ft is None:
            details["finetune_skipped"] = "no labelled training data in the pipeline"
        return PassOutput(state.replace(model=model), details)


    def artifact_details(self, tflite_bytes: bytes) -> dict[str, Any]:
        """What the exported file holds (for the report): values per kernel and per channel, gzip size.

        A hook for the driver: call it on the artifact built after this pass and on the
        final (e.g. int8) artifact, since per-channel int8 and BatchNorm folding change
        the counts.
        """
        return kernel_summary(tflite_bytes)

    def _apply_tfmot(self, state: ModelState, ctx: PassContext) -> PassOutput:
        """A tf_keras (Keras 2) model: tfmot's clustering, imported only now."""
        from kerascompress.legacy.tfmot import cluster_tf_keras

        if self.per_channel:
            from kerascompress.errors import ConfigError

            raise ConfigError("per-channel clustering of tf_keras models is not offered through tfmot here")
        data = ctx.data
        x, y = (data.x_train, data.y_train) if data is not None and data.can_train else (None, None)
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


def _skipped(kernels: list[tuple[Any, str, Any]], names: Sequence[str], first: bool, last: bool,
             min_weights: int) -> dict[str, str]:
    """Kernel key -> why it is left alone."""
    from kerascompress.errors import ConfigError

    known = {layer.name for layer, _, _ in kernels}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(f"skip_layers names unknown or unclusterable layer(s) {unknown}; clusterable: {sorted(known)}")
    out: dict[str, str] = {}
    order = list(dict.fromkeys(layer.name for layer, _, _ in kernels))
    for layer, attr, var in kernels:
        key = f"{layer.name}.{attr}"
        if layer.name in names:
            out[key] = "in skip_layers"
        elif first and order and layer.name == order[0]:
            out[key] = "first layer (skip_first)"
        elif last and order and layer.name == order[-1]:
            out[key] = "last layer (skip_last)"
        elif int(np.prod(var.shape)) < min_weights:
            out[key] = f"fewer than min_weights={min_weights} weights"
    return out


# --------------------------------------------------------------------------- exported file


