"""`WeightConstraintPass`: what Cluster and Sparsity share.

Both constrain kernel values (k shared values, or zeros in a pattern), keep the
constraint exact through an optional fine-tuning, leave chosen layers alone with a
stated reason, report what the exported file really holds, and hand tf_keras models
to tfmot. The settings and that machinery live here once.
"""
from __future__ import annotations

import abc
from typing import Any, Optional, Sequence

import keras
import numpy as np

from kerascompress.errors import ConfigError
from kerascompress.graph.traversal import all_layers
from kerascompress.models.kinds import is_tf_keras_model
from kerascompress.passes.base import ModelState, Pass, PassContext, PassOutput

#: A kernel a pass constrains: (layer, attribute name, variable).
Kernel = tuple[Any, str, Any]


class WeightConstraintPass(Pass):
    """Base of passes that constrain kernel values and fine-tune under the constraint.

    ``skip_layers`` names layers to leave alone; ``skip_first`` / ``skip_last`` skip the
    first and last eligible layer (small and sensitive); ``min_weights`` skips smaller
    kernels. ``finetune_epochs`` > 0 fine-tunes on the pipeline's training split
    (needs labels) with ``learning_rate``, ``batch_size``, ``freeze_batchnorm``,
    ``distill_weight`` (weight of distillation from the original model, i.e.
    ``1 - alpha`` of `finetune`: half by default, as for every pass that changes
    weights; 0 trains on labels only) and ``max_steps_per_epoch``. The fine-tuning runs
    under the run's strategy, callbacks and checkpoints (`PassContext.fine_tuning`).
    """

    tf_keras_unsupported = None  # tf_keras models go to tfmot (see `apply`)
    needs_layer_graph = False  # kernels are found by walking layers, also inside a subclassed model
    reports_weight_values = True
    #: Layer class name -> attribute names of the kernels this pass constrains.
    kernel_attrs: dict[str, tuple[str, ...]] = {}

    def __init__(
        self,
        skip_layers: Sequence[str] = (),
        skip_first: bool = False,
        skip_last: bool = False,
        min_weights: int = 64,
        finetune_epochs: int = 0,
        learning_rate: float = 1e-4,
        batch_size: int = 64,
        freeze_batchnorm: bool = False,
        distill_weight: float = 0.5,
        max_steps_per_epoch: Optional[int] = None,
    ) -> None:
        self.skip_layers = tuple(skip_layers)
        self.skip_first = bool(skip_first)
        self.skip_last = bool(skip_last)
        self.min_weights = int(min_weights)
        self.finetune_epochs = int(finetune_epochs)
        self.learning_rate = float(learning_rate)
        self.batch_size = int(batch_size)
        self.freeze_batchnorm = bool(freeze_batchnorm)
        self.distill_weight = float(distill_weight)
        self.max_steps_per_epoch = max_steps_per_epoch

    @property
    def needs_data(self) -> bool:  # type: ignore[override]
        return self.finetune_epochs > 0

    @property
    def needs_labels(self) -> bool:  # type: ignore[override]
        return self.finetune_epochs > 0

    def apply(self, state: ModelState, ctx: PassContext) -> PassOutput:
        if is_tf_keras_model(state.model):
            return self.apply_tfmot(state, ctx)
        return self.apply_keras(state, ctx)

    @abc.abstractmethod
    def apply_keras(self, state: ModelState, ctx: PassContext) -> PassOutput:
        """The Keras 3 path."""

    @abc.abstractmethod
    def apply_tfmot(self, state: ModelState, ctx: PassContext) -> PassOutput:
        """A tf_keras (Keras 2) model, through tfmot (imported only then)."""

    # ----------------------------------------------------------------- shared helpers

    def kernels(self, model: keras.Model) -> list[Kernel]:
        """Every kernel of ``model`` this pass knows how to constrain, in layer order."""
        found = []
        for layer in all_layers(model):
            for attr in self.kernel_attrs.get(type(layer).__name__, ()):
                var = getattr(layer, attr, None)
                if var is not None:
                    found.append((layer, attr, var))
        return found

    def skipped(self, kernels: Sequence[Kernel]) -> dict[str, str]:
        """Kernel key ("layer.attr") -> why it is left alone; unknown ``skip_layers`` are an error."""
        known = {layer.name for layer, _, _ in kernels}
        unknown = [n for n in self.skip_layers if n not in known]
        if unknown:
            raise ConfigError(
                f"{type(self).__name__}: skip_layers names unknown or ineligible layer(s) {unknown}; "
                f"eligible: {sorted(known)}"
            )
        order = list(dict.fromkeys(layer.name for layer, _, _ in kernels))
        out: dict[str, str] = {}
        for layer, attr, var in kernels:
            key = f"{layer.name}.{attr}"
            if layer.name in self.skip_layers:
                out[key] = "in skip_layers"
            elif self.skip_first and order and layer.name == order[0]:
                out[key] = "first layer (skip_first)"
            elif self.skip_last and order and layer.name == order[-1]:
                out[key] = "last layer (skip_last)"
            elif int(np.prod(var.shape)) < self.min_weights:
                out[key] = f"fewer than min_weights={self.min_weights} weights"
            else:
                why = self.ineligible(layer, tuple(var.shape))
                if why:
                    out[key] = why
        return out

    def ineligible(self, layer: Any, shape: tuple[int, ...]) -> Optional[str]:
        """Why this pass's constraint cannot apply to a kernel (None: it can). Subclasses add rules."""
        return None

    @staticmethod
    def tfmot_data(ctx: PassContext) -> tuple[Any, Any]:
        """(x, y) of the training split for tfmot, or (None, None)."""
        data = ctx.data
        return (data.x_train, data.y_train) if data is not None and data.can_train else (None, None)
