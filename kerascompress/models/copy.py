"""Copying models: the one place that makes an independent copy (new variables, same function).

Passes never modify the model they are given; they work on copies made here.
"""
from __future__ import annotations

import keras

from kerascompress.graph.model_graph import ModelGraph
from kerascompress.models.kinds import is_tf_keras_model
from kerascompress.models.tf_keras import copy_tf_keras


def copy_model(model: keras.Model) -> keras.Model:
    """An independent copy (new variables) computing the same function.

    Keras' ``clone_model`` keeps the structure; where it cannot rebuild a model (some
    nested or shared-layer graphs) the copy is rebuilt from our own graph, which
    flattens nested sub-models but computes the same function.
    """
    if is_tf_keras_model(model):
        return copy_tf_keras(model)
    try:
        copy = keras.models.clone_model(model)
    except Exception:  # noqa: BLE001 - clone_model fails in many ways on unusual graphs
        return ModelGraph.from_keras(model).to_keras()
    copy.set_weights(model.get_weights())
    return copy
