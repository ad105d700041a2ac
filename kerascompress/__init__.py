"""kerascompress: make trained Keras 3 models smaller and faster on their real target.

    import kerascompress as kc
    result = kc.optimize(model, target="auto", data=(x, y))
"""
__version__ = "0.1.0"

from kerascompress import datasets, errors, export, graph, passes, targets  # noqa: E402
from kerascompress.api import optimize  # noqa: E402
from kerascompress.api_types import Constraints, OptimizeResult  # noqa: E402
from kerascompress.errors import (  # noqa: E402
    ConfigError,
    DataError,
    ExportError,
    KerasCompressError,
    UnsupportedModelError,
    UnsupportedOnTarget,
)
from kerascompress.finetune import finetune  # noqa: E402
from kerascompress.targets.target import Target  # noqa: E402

# The function shadows its subpackage's name on purpose (`kc.validate(...)`): importing
# the subpackage first makes later submodule imports leave this binding alone.
from kerascompress.validate import validate  # noqa: E402


__all__ = [
    "optimize", "validate", "finetune", "Constraints", "OptimizeResult", "Target",
    "datasets", "errors", "export", "graph", "passes", "targets",
    "ConfigError", "DataError", "ExportError", "KerasCompressError", "UnsupportedModelError", "UnsupportedOnTarget",
]
