"""Compression passes. Each is usable on its own; `optimize` chains them by recipe.

Pass classes are imported lazily so that importing kerascompress stays cheap and a pass
with optional dependencies never breaks the others.
"""
from __future__ import annotations

import importlib
from typing import Any

from kerascompress.errors import ConfigError
from kerascompress.passes.base import Gate, ModelState, Pass, PassContext, PassOutput

#: Public pass name -> "module:Class".
REGISTRY = {
    "Quantize": "kerascompress.passes.quantize:Quantize",
    "ChannelPruning": "kerascompress.passes.pruning:ChannelPruning",
    "LowRank": "kerascompress.passes.lowrank:LowRank",
    "Cluster": "kerascompress.passes.cluster:Cluster",
    "Sparsity": "kerascompress.passes.sparsity:Sparsity",
    "QuantizationAwareTraining": "kerascompress.passes.qat:QuantizationAwareTraining",
    "ChannelSearch": "kerascompress.passes.channel_search:ChannelSearch",
}


def available() -> list[str]:
    """Names of the passes whose modules are present in this installation."""
    names = []
    for name, target in REGISTRY.items():
        if importlib.util.find_spec(target.split(":")[0]) is not None:
            names.append(name)
    return names


def get(name: str) -> type:
    """The pass class registered as ``name``."""

    if name not in REGISTRY:
        raise ConfigError(f"unknown pass {name!r}; known passes: {', '.join(sorted(REGISTRY))}")
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


__all__ = ["Gate", "ModelState", "Pass", "PassContext", "PassOutput", "REGISTRY", "available", "get", *REGISTRY]
