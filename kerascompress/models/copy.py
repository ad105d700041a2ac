"""Copying models: the one place that makes an independent copy (new variables, same function).

Passes never modify the model they are given; they work on copies made here.
"""
from __future__ import annotations

import keras

from kerascompress.graph.model_graph import ModelGraph
from kerascompress.models.kinds import is_tf_keras_model
from kerascompress.models.tf_keras import copy_tf_keras


def copy_model(model: keras.Model) -> keras.Model:
    """An independent copy (new variables) computing the same function."""
    if is_tf_keras_model(model):
        return copy_tf_keras(model)
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


def clone(model: keras.Model) -> keras.Model:
    """An independent copy of ``model`` (same structure, copied weights)."""
    try:
        copy = keras.models.clone_model(model)
    except Exception:  # noqa: BLE001 - fall back to our own rebuild (flattens sub-models)

        return ModelGraph.from_keras(model).to_keras()
    copy.set_weights(model.get_weights())
    return copy
