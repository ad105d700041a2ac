"""What the driver needs of a tf_keras (Keras 2) model: check, copy, count, export to TFLite.

The Keras 3 code paths (`models.io`, `graph.counting`, `export.tflite`) read Keras 3
graphs; these are their small tf_keras counterparts, called from dispatch points in
`models.io`, `models.copy` and the pipeline. Nothing here imports tf_keras or tfmot at module
level: a tf_keras model object already implies they are importable, and a Keras 3 user
never reaches this module's functions.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from kerascompress.errors import UnsupportedModelError

#: Said in the report of every run on a tf_keras model.
NOTES = (
    "tf_keras (Keras 2) model: Quantize, QAT, Cluster and Sparsity run (the last three through "
    "tensorflow-model-optimization); structured passes (channel pruning, low-rank) need a Keras 3 model",
    "tf_keras model: MACs are counted for Conv/Dense/Depthwise/Separable layers from their shapes; when the model "
    "holds another layer with weights, MACs are reported as unknown (-) rather than guessed",
)

#: Why a pass that reads Keras 3 graphs is skipped on a tf_keras model (the driver adds the pass name).
KERAS3_ONLY = (
    "needs a Keras 3 model: it edits the Keras 3 layer graph. For tf_keras models use Quantize, QAT, Cluster or "
    "Sparsity, or rebuild the model with Keras 3 (keras.Model) to use it"
)


def check_supported_tf_keras(model: Any) -> None:
    """Refuse tf_keras models the pipeline cannot read (subclassed or unbuilt), saying what to do."""
    import tf_keras

    graph_types = (tf_keras.Sequential, tf_keras.Model)
    is_graph = isinstance(model, graph_types) and getattr(model, "_is_graph_network", False)
    if not is_graph:
        raise UnsupportedModelError(
            f"{type(model).__name__} is a subclassed tf_keras model: its call() is Python code that kerascompress "
            f"cannot read. Build it with the functional API (tf_keras.Model(inputs, outputs)) or tf_keras.Sequential "
            f"with an Input"
        )
    if not model.built or not model.inputs:
        raise UnsupportedModelError("the tf_keras model is not built; give its Input shape first")


def copy_tf_keras(model: Any) -> Any:
    """An independent tf_keras copy (new variables) computing the same function."""
    import tf_keras

    clone = tf_keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


# --------------------------------------------------------------------------- counting

_ZERO_MAC = {
    "InputLayer", "Activation", "ReLU", "LeakyReLU", "PReLU", "ELU", "Softmax", "Dropout", "SpatialDropout2D",
    "Flatten", "Reshape", "Permute", "Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Concatenate",
    "MaxPooling1D", "MaxPooling2D", "AveragePooling1D", "AveragePooling2D", "GlobalMaxPooling1D",
    "GlobalMaxPooling2D", "GlobalAveragePooling1D", "GlobalAveragePooling2D", "ZeroPadding2D", "Cropping2D",
    "UpSampling2D", "BatchNormalization", "LayerNormalization", "Rescaling", "Normalization", "QuantizeLayer",
}


def _prod(dims: Any) -> int:
    return int(np.prod([int(d) for d in dims])) if len(dims) else 1


def _layer_macs(layer: Any) -> Optional[int]:
    """MACs (batch 1) of one single-call layer, 0 for weight-free ones, None when not modelled."""
    inner = getattr(layer, "layer", layer)  # tfmot wrappers (QAT) hold the real layer
    kind = type(inner).__name__
    if kind in _ZERO_MAC or not inner.weights:
        return 0  # weight-free layers (pooling, reshapes, elementwise) count 0, as in graph.counting
    if len(getattr(inner, "_inbound_nodes", ())) != 1:
        return None  # shared layer: per-call shapes not read here
    try:
        out = tuple(inner.output_shape)
        inp = tuple(inner.input_shape)
    except (AttributeError, RuntimeError, TypeError):
        return None
    if any(d is None for d in out[1:] + inp[1:]):
        return None
    if kind in ("Conv1D", "Conv2D", "Conv3D"):
        k = tuple(inner.kernel.shape)
        return _prod(out[1:]) * _prod(k[:-1])
    if kind in ("Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose"):
        k = tuple(inner.kernel.shape)
        return _prod(inp[1:]) * _prod(k[:-1])
    if kind in ("DepthwiseConv1D", "DepthwiseConv2D"):
        k = tuple(inner.depthwise_kernel.shape)
        return _prod(out[1:]) * _prod(k[:-2])
    if kind in ("SeparableConv1D", "SeparableConv2D"):
        dw, pw = tuple(inner.depthwise_kernel.shape), tuple(inner.pointwise_kernel.shape)
        positions = _prod(out[1:-1])
        return positions * _prod(dw) + positions * _prod(pw)
    if kind == "Dense":
        return _prod(out[1:-1]) * _prod(tuple(inner.kernel.shape))
    return None


def count_tf_keras(model: Any) -> tuple[int, Optional[int]]:
    """(parameters, MACs or None): ``count_params()``, MACs only when every weighted layer is modelled."""
    total = 0
    for layer in model.layers:
        macs = _layer_macs(layer)
        if macs is None:
            return int(model.count_params()), None
        total += macs
    return int(model.count_params()), total


# --------------------------------------------------------------------------- TFLite


