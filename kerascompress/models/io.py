"""Load the caller's model from an object or a file, and copy it so it is never mutated."""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import keras
import numpy as np

from kerascompress.errors import UnsupportedModelError
from kerascompress.models.kinds import is_graph_model, is_tf_keras_model
from kerascompress.models.tf_keras import check_supported_tf_keras


def load_model(model: Any) -> keras.Model:
    """A Keras 3 model from a ``keras.Model`` or a path to a .keras / .h5 file or SavedModel folder.

    A tf_keras (Keras 2) model object is passed through as is (files load as Keras 3).
    """
    if isinstance(model, keras.Model) or is_tf_keras_model(model):
        return model
    if isinstance(model, (str, Path)):
        path = Path(model)
        if not path.exists():
            raise UnsupportedModelError(f"model file {str(path)!r} does not exist")
        if path.is_dir():
            if (path / "saved_model.pb").exists():
                raise UnsupportedModelError(
                    f"{path} is a TensorFlow SavedModel: Keras 3 cannot edit its layers. Load the original Keras "
                    f"model (or save it with model.save('model.keras')) and pass that instead"
                )
            raise UnsupportedModelError(f"{path} is a folder without saved_model.pb; pass a .keras or .h5 file")
        if path.suffix not in (".keras", ".h5", ".hdf5"):
            raise UnsupportedModelError(f"{path}: unknown model format {path.suffix!r}; pass a .keras or .h5 file")
        try:
            return keras.models.load_model(path, compile=False)
        except Exception as exc:  # corrupt file, unknown custom objects, ...
            raise UnsupportedModelError(
                f"could not load {path}: {exc}. If it uses custom layers, register them with "
                f"@keras.saving.register_keras_serializable() and import them before calling kerascompress"
            ) from exc
    raise UnsupportedModelError(
        f"expected a keras.Model or a path to a .keras/.h5 file, got {type(model).__name__}"
    )


def check_supported(model: keras.Model) -> None:
    """Refuse models the pipeline cannot read, with what to do instead."""
    if is_tf_keras_model(model):
        return check_supported_tf_keras(model)
    if not isinstance(model, (keras.Sequential, keras.Model)) or not is_graph_model(model):
        raise UnsupportedModelError(
            f"{type(model).__name__} is a subclassed keras.Model: its call() is Python code that kerascompress "
            f"cannot read. Build it with the Functional API (keras.Model(inputs, outputs)) or keras.Sequential"
        )
    if not model.built:
        raise UnsupportedModelError("the model is not built; call it on data or give its Input shape first")


def weights_digest(model: keras.Model) -> str:
    """SHA-256 over every weight's bytes, to prove a model was not modified."""
    h = hashlib.sha256()
    for w in model.weights:
        a = np.ascontiguousarray(keras.ops.convert_to_numpy(w))
        h.update(w.path.encode() if hasattr(w, "path") else b"")
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()
