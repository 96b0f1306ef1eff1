"""What a model declares to gradlens: its layers, activations and blocks.

Probes work on any model: a model may describe itself by defining ``gradlens_spec() -> ModelSpec``
(every model in :mod:`gradlens.models` does), a user may pass a ``ModelSpec`` to :func:`gradlens.attach`,
and otherwise the session discovers the layers (``nn.Linear``, ``nn.Conv1d/2d/3d`` and registered types)
in forward order on the first forward pass.

All names are dotted module names as given by ``model.named_modules()``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn


@dataclass(frozen=True)
class LayerSpec:
    """One weight layer.

    Attributes:
        name: dotted module name of the layer (an ``nn.Linear``/``nn.Conv*d`` or a registered type).
        residual: True when the block computes ``f(x + layer(x))``: an identity skip around exactly this
            layer (the simplified ResNet of document 004, Figure 5b). The layer cushion then uses the
            full map ``x + A x`` in its numerator and ``‖A‖_F`` of the residual weights (identity removed).
    """

    name: str
    residual: bool = False


@dataclass(frozen=True)
class ModelSpec:
    """The parts of a model that probes measure.

    Attributes:
        layers: weight layers in forward order.
        activations: modules whose *output* is an intermediate activation a^(ℓ) (document 004, eq. 5).
        final_activation: module whose output is the final activation a^(L) (before the classifier head).
        blocks: modules whose forward maps x^i to x^j: the segments of interlayer cushions (document 004,
            eq. 2 ff.). Each is one module name.
    """

    layers: tuple[LayerSpec, ...]
    activations: tuple[str, ...] = ()
    final_activation: str | None = None
    blocks: tuple[str, ...] = field(default_factory=tuple)

    def layer_names(self) -> list[str]:
        """Names of the weight layers, in forward order."""
        return [layer.name for layer in self.layers]

    def validate(self, model: nn.Module) -> None:
        """Raise ``ValueError`` naming the first declared module that ``model`` does not have."""
        modules = dict(model.named_modules())
        declared = [*self.layer_names(), *self.activations, *self.blocks]
        if self.final_activation is not None:
            declared.append(self.final_activation)
        for name in declared:
            if name not in modules:
                raise ValueError(
                    f"module {name!r} declared in the ModelSpec does not exist in {type(model).__name__}; "
                    f"names look like {list(modules)[1:4]} (see model.named_modules())"
                )
