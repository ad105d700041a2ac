"""tfmot clustering, N:M / unstructured pruning and QAT for tf_keras models.

Each function takes a tf_keras model and training arrays, returns a *new* stripped
tf_keras model (the caller's is not modified: tfmot wraps a clone) and details in the
same shape as the Keras 3 passes report, so a report reads the same for both paths.
"""
from __future__ import annotations

import contextlib
import importlib
import os
from typing import Any, Iterator, Optional

import numpy as np

from kerascompress.errors import ConfigError, KerasCompressError

_ENV = "TF_USE_LEGACY_KERAS"


class LegacyUnavailable(KerasCompressError):
    """tfmot or tf_keras is not installed (or cannot be imported next to this TensorFlow)."""


def missing_reason() -> Optional[str]:
    """Why the tfmot path cannot run here, or None when it can (imports nothing lasting)."""
    for name in ("tf_keras", "tensorflow_model_optimization"):
        if importlib.util.find_spec(name) is None:
            return (f"{name} is not installed: pip install 'kerascompress[tfmot]' (needs the full `tensorflow` "
                    f"wheel; tf-keras does not work with tensorflow-cpu)")
    return None


@contextlib.contextmanager
def tfmot_session() -> Iterator[Any]:
    """Yield the tfmot module, restoring ``TF_USE_LEGACY_KERAS`` afterwards.

    tfmot sets the variable at import; left set, any later first access of
    ``tf.keras`` in this process (by the caller or by kerascompress) would silently
    give Keras 2. We restore the caller's value (or its absence) on exit.
    """
    reason = missing_reason()
    if reason:
        raise LegacyUnavailable(reason)
    saved = os.environ.get(_ENV)
    try:
        try:
            tfmot = importlib.import_module("tensorflow_model_optimization")
        except Exception as exc:  # noqa: BLE001 - an incompatible install fails in many ways
            raise LegacyUnavailable(f"tensorflow_model_optimization failed to import: {exc}") from exc
        yield tfmot
    finally:
        if saved is None:
            os.environ.pop(_ENV, None)
        else:
            os.environ[_ENV] = saved


def _fit(model: Any, x: Any, y: Any, epochs: int, batch_size: int, learning_rate: float, callbacks: list,
         from_logits: bool) -> None:
    """Fine-tune a tfmot-wrapped model; ``from_logits`` is read from the *unwrapped* model
    (tfmot wrappers hide the last layer's activation)."""
    import tf_keras

    loss = tf_keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits)
    model.compile(optimizer=tf_keras.optimizers.Adam(learning_rate), loss=loss, metrics=["accuracy"])
    model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=0, callbacks=callbacks)


def _softmax(model: Any) -> bool:
    act = getattr(model.layers[-1], "activation", None)
    return getattr(act, "__name__", "") == "softmax"


def _kernels(model: Any) -> dict[str, np.ndarray]:
    out = {}
    for layer in model.layers:
        for attr in ("kernel", "depthwise_kernel", "pointwise_kernel"):
            w = getattr(layer, attr, None)
            if w is not None:
                out[f"{layer.name}.{attr}"] = np.asarray(w.numpy())
    return out


def cluster_tf_keras(model: Any, n_clusters: int = 16, init: str = "kmeans++", x: Any = None, y: Any = None,
                     finetune_epochs: int = 0, batch_size: int = 64, learning_rate: float = 1e-4,
                     skip_layers: tuple[str, ...] = ()) -> tuple[Any, dict[str, Any]]:
    """tfmot weight clustering (cluster-preserving fine-tuning when data is given), stripped."""
    import tf_keras

    with tfmot_session() as tfmot:
        cl = tfmot.clustering.keras
        inits = {"kmeans++": cl.CentroidInitialization.KMEANS_PLUS_PLUS,
                 "linear": cl.CentroidInitialization.LINEAR,
                 "density": cl.CentroidInitialization.DENSITY_BASED}
        params = {"number_of_clusters": int(n_clusters), "cluster_centroids_init": inits[init]}
        clone = tf_keras.models.clone_model(model)
        clone.set_weights(model.get_weights())

        def annotate(layer: Any) -> Any:
            if layer.name in skip_layers or not hasattr(layer, "kernel"):
                return layer
            return cl.cluster_weights(layer, **params)

        wrapped = tf_keras.models.clone_model(clone, clone_function=annotate)
        if finetune_epochs > 0 and x is not None and y is not None:
            _fit(wrapped, x, y, finetune_epochs, batch_size, learning_rate, [], not _softmax(model))
        stripped = cl.strip_clustering(wrapped)
    layers = {k: {"clustered": k.split(".")[0] not in skip_layers, "unique_values": int(np.unique(v).size)}
              for k, v in _kernels(stripped).items()}
    return stripped, {"backend": "tfmot", "n_clusters": n_clusters, "init": init, "layers": layers,
                      "finetune": {"epochs": finetune_epochs} if finetune_epochs and x is not None else None}


def sparsity_tf_keras(model: Any, nm: Optional[tuple[int, int]] = (2, 4), sparsity: float = 0.5, x: Any = None,
                      y: Any = None, finetune_epochs: int = 0, batch_size: int = 64,
                      learning_rate: float = 1e-4) -> tuple[Any, dict[str, Any]]:
    """tfmot magnitude pruning: N:M given as ``nm`` (``sparsity_m_by_n``) or unstructured (``nm=None``), stripped.

    tfmot prunes inside training steps, so without data (or with ``finetune_epochs=0``)
    one pruning step is run on a single batch at the final sparsity.
    """
    import tf_keras

    if nm is not None and tuple(nm) != (2, 4):
        raise ConfigError(f"the tfmot path supports '2:4' and 'unstructured', not '{nm[0]}:{nm[1]}'")
    with tfmot_session() as tfmot:
        sp = tfmot.sparsity.keras
        kwargs: dict[str, Any] = {}
        if nm is not None:
            kwargs["sparsity_m_by_n"] = nm
            kwargs["pruning_schedule"] = sp.ConstantSparsity(1.0 - nm[0] / nm[1], begin_step=0, frequency=1)
        else:
            kwargs["pruning_schedule"] = sp.ConstantSparsity(float(sparsity), begin_step=0, frequency=1)
        clone = tf_keras.models.clone_model(model)
        clone.set_weights(model.get_weights())
        wrapped = sp.prune_low_magnitude(clone, **kwargs)
        if x is None or y is None:
            raise LegacyUnavailable("tfmot applies masks during training steps: give (x, y) data")
        epochs = max(1, int(finetune_epochs))
        xs, ys = (x, y) if finetune_epochs > 0 else (x[:batch_size], y[:batch_size])
        _fit(wrapped, xs, ys, epochs, batch_size, learning_rate if finetune_epochs > 0 else 0.0,
             [sp.UpdatePruningStep()], not _softmax(model))
        stripped = sp.strip_pruning(wrapped)
    layers: dict[str, Any] = {}
    for key, v in _kernels(stripped).items():
        layers[key] = {"sparsity": float(np.mean(v == 0))}
        if nm is not None and v.ndim >= 2 and v.shape[-2] % nm[1]:  # tfmot leaves these dense
            layers[key].update(sparse=False, reason=f"{v.shape[-2]} input channels is not a multiple of {nm[1]}")
    pattern = "unstructured" if nm is None else f"{nm[0]}:{nm[1]}"
    return stripped, {"backend": "tfmot", "pattern": pattern, "layers": layers}


def qat_tf_keras(model: Any, x: Any, y: Any, epochs: int = 1, batch_size: int = 64,
                 learning_rate: float = 1e-4) -> tuple[Any, dict[str, Any]]:
    """tfmot quantization-aware training (int8 fake-quant); export with the TFLite converter.

    tfmot wraps a clone of the layers it is given, so it gets our own copy: training
    must never reach the caller's variables.
    """
    import tf_keras

    clone = tf_keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    with tfmot_session() as tfmot:
        wrapped = tfmot.quantization.keras.quantize_model(clone)
        _fit(wrapped, x, y, epochs, batch_size, learning_rate, [], not _softmax(model))
    return wrapped, {"backend": "tfmot", "epochs": epochs}
