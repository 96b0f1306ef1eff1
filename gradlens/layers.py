"""Which modules are layers: an explicit mapping from module type to layer kind.

Discovery walks the model in *forward order* (the order modules are first called on a real forward pass),
keeps modules whose type is a registered layer type and ignores registered auxiliary types (norms,
embeddings, activations without weights). A module type that owns parameters but is neither is an error
that names the type and how to register it: gradlens never silently skips a layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from gradlens.spec import LayerSpec, ModelSpec

LAYER_KINDS: dict[type[nn.Module], str] = {
    nn.Linear: "linear",
    nn.Conv1d: "conv1d",
    nn.Conv2d: "conv2d",
    nn.Conv3d: "conv3d",
}

AUXILIARY_TYPES: set[type[nn.Module]] = {
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.Embedding,
    nn.PReLU,
}


def register_layer_type(module_type: type[nn.Module], kind: str | None = None) -> None:
    """Make ``module_type`` a layer (``kind`` given) or an ignored auxiliary module (``kind=None``).

    The module must own a ``weight`` parameter to be a layer: gradient probes read ``module.weight.grad``.
    """
    if kind is None:
        AUXILIARY_TYPES.add(module_type)
    else:
        LAYER_KINDS[module_type] = kind


def layer_kind(module: nn.Module) -> str | None:
    """The registered kind of ``module``, None for auxiliary/parameter-free modules.

    Raises:
        TypeError: the module owns parameters and its type is not registered.
    """
    for module_type, kind in LAYER_KINDS.items():
        if isinstance(module, module_type):
            return kind
    if isinstance(module, tuple(AUXILIARY_TYPES)) or not any(True for _ in module.parameters(recurse=False)):
        return None
    raise TypeError(
        f"gradlens does not know whether {type(module).__name__} is a layer; register it with "
        f"gradlens.register_layer_type({type(module).__name__}, kind='...') (a layer with a .weight) "
        f"or gradlens.register_layer_type({type(module).__name__}, None) to ignore it"
    )


@dataclass(frozen=True)
class LayerInfo:
    """A resolved layer: its name, module, kind and whether an identity skip wraps it."""

    name: str
    module: nn.Module
    kind: str
    residual: bool = False

    @property
    def weight(self) -> torch.Tensor:
        """The layer's weight parameter."""
        return self.module.weight

    def row(self) -> dict:
        """The layer-table row stored in the HDF5 file."""
        weight = self.module.weight
        return {
            "name": self.name,
            "kind": self.kind,
            "shape": list(weight.shape),
            "params": sum(p.numel() for p in self.module.parameters(recurse=False)),
            "residual": self.residual,
        }


def resolve_layers(model: nn.Module, spec: ModelSpec) -> list[LayerInfo]:
    """LayerInfo for each layer declared in ``spec`` (validated against ``model``)."""
    spec.validate(model)
    modules = dict(model.named_modules())
    infos = []
    for layer in spec.layers:
        module = modules[layer.name]
        kind = LAYER_KINDS.get(type(module)) or layer_kind(module) or type(module).__name__.lower()
        if not isinstance(getattr(module, "weight", None), torch.Tensor):
            raise ValueError(f"layer {layer.name!r} ({type(module).__name__}) has no .weight tensor")
        infos.append(LayerInfo(layer.name, module, kind, layer.residual))
    return infos


class ForwardOrderTracer:
    """Records the order in which layer modules are first called during one forward pass.

    Installs one forward pre-hook per candidate module and removes them all after the first complete forward
    (a forward hook on the root) or on ``remove()``. Unknown parameter-owning module types raise at
    construction, before any training happens.
    """

    def __init__(self, model: nn.Module) -> None:
        self.order: list[str] = []
        self.done = False
        self._handles = []
        for name, module in model.named_modules():
            if name and layer_kind(module) is not None:
                self._handles.append(module.register_forward_pre_hook(self._seen(name)))
        self._handles.append(model.register_forward_hook(self._finish))

    def _seen(self, name: str):
        def hook(module: nn.Module, args: tuple) -> None:
            if name not in self.order:
                self.order.append(name)

        return hook

    def _finish(self, module: nn.Module, args: tuple, output: object) -> None:
        self.done = True
        self.remove()

    def remove(self) -> None:
        """Remove every hook this tracer installed."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def spec(self) -> ModelSpec:
        """The discovered layers as a ModelSpec (no activations, final activation or blocks)."""
        if not self.order:
            raise RuntimeError(
                "no forward pass has been traced yet; run the model once before the first step"
            )
        return ModelSpec(layers=tuple(LayerSpec(name) for name in self.order))
