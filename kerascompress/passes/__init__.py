"""Compression passes. Each is usable on its own; `optimize` chains them by recipe.

Pass classes are imported lazily so that importing kerascompress stays cheap and a pass
with optional dependencies never breaks the others. `register` adds a pass of your own,
which YAML recipes then name like a built-in one.
"""
from __future__ import annotations

import importlib
from typing import Any, Union

from kerascompress.errors import ConfigError
from kerascompress.passes.base import Gate, ModelState, Pass, PassContext, PassOutput

#: Public pass name -> "module:Class" (built-in, imported on first use) or the class (registered).
REGISTRY: dict[str, Union[str, type]] = {
    "Quantize": "kerascompress.passes.quantize:Quantize",
    "ChannelPruning": "kerascompress.passes.pruning:ChannelPruning",
    "LowRank": "kerascompress.passes.lowrank:LowRank",
    "Cluster": "kerascompress.passes.cluster:Cluster",
    "Sparsity": "kerascompress.passes.sparsity:Sparsity",
    "QuantizationAwareTraining": "kerascompress.passes.qat:QuantizationAwareTraining",
    "ChannelSearch": "kerascompress.passes.channel_search:ChannelSearch",
}


#: The names shipped with kerascompress, which `register` will not rebind.
BUILTIN = tuple(REGISTRY)


def register(name: str, cls: type) -> None:
    """Make the `Pass` subclass ``cls`` available to recipes as ``pass: name``.

    Registering a name again replaces it; the built-in names cannot be taken.
    """
    if not isinstance(cls, type) or not issubclass(cls, Pass):
        raise ConfigError(f"pass {name!r}: expected a subclass of kerascompress.passes.base.Pass, got {cls!r}")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"a pass needs a non-empty name, got {name!r}")
    if name in BUILTIN:
        raise ConfigError(f"{name!r} is a built-in pass; register yours under another name")
    REGISTRY[name] = cls


def available() -> list[str]:
    """Names of the passes whose modules are present in this installation."""
    names = []
    for name, target in REGISTRY.items():
        if isinstance(target, type) or importlib.util.find_spec(target.split(":")[0]) is not None:
            names.append(name)
    return names


def get(name: str) -> type:
    """The pass class registered as ``name``."""

    if name not in REGISTRY:
        raise ConfigError(f"unknown pass {name!r}; known passes: {', '.join(sorted(REGISTRY))}")
    if isinstance(REGISTRY[name], type):
        return REGISTRY[name]
    module_name, cls_name = REGISTRY[name].split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            raise ConfigError(f"pass {name!r} is not available in this version of kerascompress") from exc
        raise
    return getattr(module, cls_name)


def __getattr__(name: str) -> Any:
    if name in REGISTRY:
        return get(name)
    raise AttributeError(f"module 'kerascompress.passes' has no attribute {name!r}")


__all__ = ["Gate", "ModelState", "Pass", "PassContext", "PassOutput", "REGISTRY", "available", "get", "register",
           *BUILTIN]
