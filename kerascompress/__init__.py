"""kerascompress: make trained Keras 3 models smaller and faster on their real target.

    import kerascompress as kc
    result = kc.optimize(model, target="auto", data=(x, y), validation_data=(x_val, y_val))

Importing the package is light: TensorFlow, Keras and the exporters load on first use
of a name that needs them (``kc.optimize``, ``kc.passes``, ...), so ``kerascompress
--help`` or reading a target profile does not pay for them. The examples
(`kerascompress.examples`: demo model, data set loaders) are never imported from here.
"""
from __future__ import annotations

import importlib
from typing import Any

from kerascompress.errors import (
    ConfigError,
    DataError,
    ExportError,
    KerasCompressError,
    UnsupportedModelError,
    UnsupportedOnTarget,
)

__version__ = "0.1.0"

#: Public name -> "module:attribute" (attribute None: the module itself), loaded on first access.
_LAZY = {
    "optimize": "kerascompress.pipeline.driver:optimize",
    "validate": "kerascompress.pipeline.validate:validate",
    "finetune": "kerascompress.training.finetune:finetune",
    "Constraints": "kerascompress.pipeline.types:Constraints",
    "OptimizeResult": "kerascompress.pipeline.types:OptimizeResult",
    "Target": "kerascompress.targets.target:Target",
    "errors": "kerascompress.errors:",
    "export": "kerascompress.export:",
    "graph": "kerascompress.graph:",
    "passes": "kerascompress.passes:",
    "targets": "kerascompress.targets:",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'kerascompress' has no attribute {name!r}")
    module_name, _, attribute = _LAZY[name].partition(":")
    module = importlib.import_module(module_name)
    value = getattr(module, attribute) if attribute else module
    globals()[name] = value  # later lookups skip this hook
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "optimize", "validate", "finetune", "Constraints", "OptimizeResult", "Target",
    "errors", "export", "graph", "passes", "targets",
    "ConfigError", "DataError", "ExportError", "KerasCompressError", "UnsupportedModelError", "UnsupportedOnTarget",
]
