"""The models a run trains and distils from, placed under the strategy.

The student is a copy made under ``strategy.scope()``, so its variables (and the
optimizer's) are distributed variables. Two settings change on the copy only, by
rewriting layer configs:

- the dtype policy: Keras layer configs pin ``dtype`` (float32), so a copy ignores the
  global mixed-precision policy; layers producing model outputs stay float32 (softmax
  and the losses are sensitive to rounding);
- ``BatchNormalization(synchronized=True)`` with several replicas, so batch statistics
  are computed over the global batch. Unsynchronised, each replica normalises with its
  own shard's statistics and writes its own moving averages into its own copy of the
  "mirrored" variable (Keras creates them with ``aggregation="none"``): the copies
  silently diverge and a checkpoint reads replica 0's.

`plain_copy` gives the caller a model with the original configs, built outside any
strategy, holding the trained weights.
"""
from __future__ import annotations

from typing import Optional

import keras
import numpy as np

from kerascompress.errors import UnsupportedModelError
from kerascompress.graph.traversal import all_layers
from kerascompress.models.copy import copy_model


def _output_layer_names(model: keras.Model) -> set[str]:
    names = set()
    for tensor in getattr(model, "outputs", None) or []:
        history = getattr(tensor, "_keras_history", None)
        if history is not None:
            names.add(history[0].name)
    return names


def _computes_in_float(layer: keras.layers.Layer) -> bool:
    policy = getattr(layer, "dtype_policy", None)
    return policy is not None and "float" in str(policy.compute_dtype)


def student(model: keras.Model, policy: Optional[str], sync_batchnorm: bool, freeze_batchnorm: bool) -> keras.Model:
    """A copy of ``model`` (same weights) with the training-only settings; call it under the strategy's scope.

    ``freeze_batchnorm``: BatchNormalization layers are frozen (Keras 3 then runs them in
    inference mode: their statistics stay put), safer when fine-tuning data is scarce.
    """
    if not policy and not sync_batchnorm:
        copy = copy_model(model)
    else:
        keep_float32 = _output_layer_names(model)

        def rebuild(layer: keras.layers.Layer) -> keras.layers.Layer:
            config = layer.get_config()
            if policy and not isinstance(layer, keras.layers.InputLayer) and _computes_in_float(layer):
                config["dtype"] = "float32" if layer.name in keep_float32 else policy
            if sync_batchnorm and isinstance(layer, keras.layers.BatchNormalization):
                config["synchronized"] = True
            return layer.__class__.from_config(config)

        try:
            copy = keras.models.clone_model(model, clone_function=rebuild, recursive=True)
        except Exception as exc:  # noqa: BLE001 - clone_model fails in many ways on unusual graphs
            raise UnsupportedModelError(
                f"cannot rebuild {model.name!r} with synchronized BatchNormalization or a mixed-precision policy "
                f"({type(exc).__name__}: {exc}); train it on one replica without mixed_precision"
            ) from exc
        copy.set_weights(model.get_weights())
    if freeze_batchnorm:
        for layer in all_layers(copy):
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False
    return copy


def teacher(model: keras.Model, replicas: int) -> keras.Model:
    """The teacher as each replica reads it: with several replicas a frozen copy made under the scope."""
    if replicas <= 1:
        return model
    try:
        copy = copy_model(model)
    except Exception:  # noqa: BLE001 - a teacher we cannot copy is read from where it lives
        return model
    copy.trainable = False
    return copy


def reseed(model: keras.Model, seed: int) -> None:
    """Give every RNG state in ``model`` (Dropout, noise layers) a value derived from ``seed``.

    A copy's seed generators are seeded from Python's global `random` when it is made, so
    two runs would otherwise draw different dropout masks; fixed, a fresh run and a
    resumed one (which restores these states from its checkpoint) are identical.
    """
    states = [v for v in model.variables if "seed_generator_state" in v.path]
    for i, state in enumerate(states):
        value = np.zeros(state.shape, dtype=state.dtype)
        value.flat[0] = int(np.random.default_rng([seed, i]).integers(1, 2**31 - 1))
        state.assign(value)


def plain_copy(trained: keras.Model, original: keras.Model) -> keras.Model:
    """A model with ``original``'s configs (dtype policies, BN settings) and ``trained``'s weights."""
    copy = copy_model(original)
    copy.set_weights(trained.get_weights())
    return copy
