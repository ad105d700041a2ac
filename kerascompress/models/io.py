"""Load the caller's model from an object or a file, check it can be optimized, prove it was not modified."""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import keras
import numpy as np

from kerascompress.errors import ConfigError, UnsupportedModelError
from kerascompress.models.kinds import is_tf_keras_model
from kerascompress.models.tf_keras import check_supported_tf_keras

MODEL_SUFFIXES = (".keras", ".h5", ".hdf5")


def load_model(model: Any, safe_mode: bool = True) -> keras.Model:
    """A Keras 3 model from a ``keras.Model`` or a path to a .keras / .h5 file.

    A tf_keras (Keras 2) model object is passed through as is (files load as Keras 3).
    ``safe_mode`` is Keras': a file holding Python code (a Lambda layer) is refused
    unless the caller turns it off knowingly, since loading would run that code.
    """
    if isinstance(model, keras.Model) or is_tf_keras_model(model):
        return model
    if not isinstance(model, (str, Path)):
        raise UnsupportedModelError(
            f"expected a keras.Model or a path to a .keras/.h5 file, got {type(model).__name__}"
        )
    path = Path(model)
    if not path.exists():
        raise UnsupportedModelError(f"model file {str(path)!r} does not exist; check the path")
    if path.is_dir():
        if (path / "saved_model.pb").exists():
            raise UnsupportedModelError(
                f"{path} is a TensorFlow SavedModel: Keras 3 cannot edit its layers. Load the original Keras "
                f"model (or save it with model.save('model.keras')) and pass that instead"
            )
        raise UnsupportedModelError(f"{path} is a folder, not a model file; pass a .keras or .h5 file")
    if path.suffix.lower() not in MODEL_SUFFIXES:
        raise UnsupportedModelError(
            f"{path}: unknown model format {path.suffix!r}; pass a Keras model file (.keras, or legacy .h5)"
        )
    try:
        return keras.models.load_model(path, compile=False, safe_mode=safe_mode)
    except Exception as exc:  # corrupt file, Lambda layers, unknown custom objects, ...
        raise _load_error(path, exc) from exc


def _load_error(path: Path, exc: Exception) -> UnsupportedModelError:
    message = " ".join(str(exc).split())
    if "safe_mode" in message or "unsafe_deserialization" in message:
        return UnsupportedModelError(
            f"{path} holds a Lambda layer (Python code), and Keras' safe_mode refuses to run code from a model file: "
            f"loading a file can then execute anything. If you trust this file, load it knowingly: "
            f"keras.models.load_model({str(path)!r}, safe_mode=False) and pass the model (command line: "
            f"--unsafe_load); better, replace the Lambda with a registered custom layer"
        )
    if "Could not locate class" in message or "Unknown layer" in message:
        return UnsupportedModelError(
            f"could not load {path}: it uses a custom class Keras does not know here ({message[:300]}). Import the "
            f"module defining it (decorated with @keras.saving.register_keras_serializable()) before calling "
            f"kerascompress"
        )
    return UnsupportedModelError(
        f"could not load {path}: {message[:300]}. The file may be truncated or corrupt: save the model again "
        f"with model.save('model.keras')"
    )


def check_supported(model: Any) -> None:
    """Refuse models the pipeline cannot read (not a model, not built), with what to do instead.

    Subclassed models are accepted: the driver wraps them (`models.subclassed`) and
    skips the passes that need a layer graph.
    """
    if is_tf_keras_model(model):
        return check_supported_tf_keras(model)
    if not isinstance(model, keras.Model):
        raise UnsupportedModelError(f"expected a keras.Model, got {type(model).__name__}")
    if not model.built:
        raise UnsupportedModelError(
            f"the model {model.name!r} is not built, so its weights do not exist yet: call it once on a batch "
            f"(model(x)), or give it an input shape (keras.Input(...) or model.build((None, ...))) first"
        )


def check_weights_finite(model: Any) -> None:
    """Refuse a model whose weights hold NaN or Inf: nothing it computes can be judged."""
    bad = []
    for w in model.weights:
        a = np.asarray(w.numpy() if hasattr(w, "numpy") else keras.ops.convert_to_numpy(w))
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            name = getattr(w, "path", None) or getattr(w, "name", "?")
            bad.append(f"{name} ({int(np.isnan(a).sum())} NaN, {int(np.isinf(a).sum())} Inf)")
    if bad:
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise UnsupportedModelError(
            f"the model's weights hold NaN/Inf values: {', '.join(bad[:3])}{more}. Training diverged or the file is "
            f"damaged: restore a good checkpoint or retrain (a lower learning rate, gradient clipping)"
        )


def check_output_dir(path: Any) -> Path:
    """The output folder as a Path, created if missing; `ConfigError` when it cannot be a writable folder."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output folder {str(out)!r} is an existing file; pass a folder path (created if missing)")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".kerascompress-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(
            f"cannot write to the output folder {str(out)!r} ({exc.strerror or exc}); choose a folder you can write to"
        ) from exc
    return out


def weights_digest(model: keras.Model) -> str:
    """SHA-256 over every weight's bytes, to prove a model was not modified."""
    h = hashlib.sha256()
    for w in model.weights:
        a = np.ascontiguousarray(keras.ops.convert_to_numpy(w))
        h.update(w.path.encode() if hasattr(w, "path") else b"")
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()
