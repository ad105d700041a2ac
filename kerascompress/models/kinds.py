"""What kind of model object we were handed, without importing the optional libraries it may come from."""
from __future__ import annotations

from typing import Any

import keras


def is_tf_keras_model(model: Any) -> bool:
    """True for a legacy Keras 2 (tf_keras) model, without importing tf_keras."""
    return any(c.__module__.split(".")[0] == "tf_keras" for c in type(model).__mro__)


def is_graph_model(model: keras.Model) -> bool:
    from keras.src.models.functional import Functional

    return isinstance(model, (Functional, keras.Sequential))
