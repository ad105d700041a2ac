"""Subclassed Keras models: run them through the pipeline inside a Functional wrapper.

A subclassed model's call() is Python code, so there is no layer graph to read or
edit; but its weights (Cluster, Sparsity) and the converter (Quantize) need none.
Wrapped as ``keras.Model(Input, model(Input))`` it gets the inputs and outputs that
copying, exporting and measuring rely on, and the passes that need a layer graph see
that the wrapper holds nothing but an opaque model (`layer_graph_missing`) and are
skipped with that reason.
"""
from __future__ import annotations

from typing import Any, Optional

import keras
import numpy as np

from kerascompress.data.samples import as_list
from kerascompress.errors import UnsupportedModelError
from kerascompress.models.kinds import has_layer_graph, is_tf_keras_model


def is_subclassed(model: Any) -> bool:
    """A Keras 3 model whose computation is its own call() (not a Functional/Sequential graph)."""
    return isinstance(model, keras.Model) and not is_tf_keras_model(model) and not has_layer_graph(model)


def wrap(model: keras.Model, x: Any = None) -> keras.Model:
    """A Functional model computing ``model`` (same variables), its inputs shaped like ``x`` or its build shape."""
    specs = _input_specs(model, x)
    inputs = [keras.Input(shape, dtype=dtype, name=f"input_{i}" if len(specs) > 1 else "input")
              for i, (shape, dtype) in enumerate(specs)]
    try:
        outputs = model(inputs[0] if len(inputs) == 1 else inputs)
    except Exception as exc:  # noqa: BLE001 - call() is user code
        raise UnsupportedModelError(
            f"subclassed model {model.name!r} ({type(model).__name__}) fails when called on symbolic inputs of "
            f"shapes {[s for s, _ in specs]} ({type(exc).__name__}: {exc}); make call() work on keras.Input tensors"
        ) from exc
    return keras.Model(inputs[0] if len(inputs) == 1 else inputs, outputs, name=model.name)


def _input_specs(model: keras.Model, x: Any) -> list[tuple[tuple, str]]:
    """(shape without batch, dtype) per input: from the data when given, else from the model's build shape."""
    if x is not None:
        arrays = [np.asarray(a) for a in as_list(x)]
        return [(a.shape[1:], "int32" if a.dtype.kind in "iub" else "float32") for a in arrays]
    shapes = list((getattr(model, "_build_shapes_dict", None) or {}).values())
    if len(shapes) == 1:
        first = shapes[0]
        many = isinstance(first, (list, tuple)) and first and isinstance(first[0], (list, tuple))
        dims = [tuple(s) for s in first] if many else [tuple(first)]
        if all(len(s) >= 1 for s in dims):
            return [(s[1:], "float32") for s in dims]
    raise UnsupportedModelError(
        f"cannot tell the input shape of subclassed model {model.name!r} ({type(model).__name__}); pass data=... "
        f"so kerascompress can read it from the data"
    )


def layer_graph_missing(model: Any) -> Optional[str]:
    """Why ``model`` has no layer graph a pass could edit, or None when it has one.

    True of a subclassed model and of its wrapper (whose only layer is that model).
    tf_keras models are not judged here (see `Pass.tf_keras_unsupported`).
    """
    if is_tf_keras_model(model) or not isinstance(model, keras.Model):
        return None
    kind = type(model).__name__
    if has_layer_graph(model):
        opaque = [layer for layer in model.layers if isinstance(layer, keras.Model) and not has_layer_graph(layer)]
        rest = [layer for layer in model.layers if type(layer).__name__ != "InputLayer" and layer not in opaque]
        if not opaque or rest:
            return None
        kind = type(opaque[0]).__name__
    return (
        f"the model {model.name!r} is a subclassed model ({kind}): its call() is Python code, so there is no layer "
        f"graph to edit"
    )
