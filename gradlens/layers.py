"""Which modules are layers: an explicit mapping from module type to layer kind.

Discovery walks the model in *forward order* (the order modules are first called on a real forward pass),
keeps modules whose type is a registered layer type and ignores registered auxiliary types (norms,
embeddings, activations without weights). A module type that owns parameters but is neither is an error
that names the type and how to register it when a probe needs layers (``strict=True``): gradlens never
silently skips a layer. Probes that cover every parameter (``GradStats()``, ``UpdateRatio()``) need no
layers, so discovery is then lenient and unknown types simply do not appear in the layer table.

:func:`describe_parameters` lists every parameter (frozen ones included) with its wrapper-free name, the
module that owns it and that module's kind: the rows of ``meta["parameters"]`` and the labels of
per-parameter probes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from gradlens.naming import module_table, parameter_labels, strip_wrappers
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
    # its in_proj_weight/in_proj_bias are covered per parameter; its out_proj is an nn.Linear layer
    nn.MultiheadAttention,
}


def register_layer_type(module_type: type[nn.Module], kind: str | None = None) -> None:
    """Make ``module_type`` a layer (``kind`` given) or an ignored auxiliary module (``kind=None``).

    The module must own a ``weight`` parameter to be a layer: gradient probes read ``module.weight.grad``.
    """
    if kind is None:
        AUXILIARY_TYPES.add(module_type)
    else:
        LAYER_KINDS[module_type] = kind


def layer_kind(module: nn.Module, strict: bool = True) -> str | None:
    """The registered kind of ``module``, None for auxiliary/parameter-free modules.

    Raises:
        TypeError: ``strict`` and the module owns parameters and its type is not registered (without
            ``strict`` such a module is not a layer: None).
    """
    for module_type, kind in LAYER_KINDS.items():
        if isinstance(module, module_type):
            return kind
    if isinstance(module, tuple(AUXILIARY_TYPES)) or not any(True for _ in module.parameters(recurse=False)):
        return None
    if not strict:
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


@dataclass(frozen=True)
class ParameterInfo:
    """One parameter: its wrapper-free qualified name, owning module, that module's kind, the tensor.

    Attributes:
        name: wrapper-free qualified name, e.g. ``encoder.layer.0.attention.self.query.weight``.
        module: wrapper-free name of the module that owns it (``""`` for the root).
        kind: the owner's layer kind (``"linear"``, ``"conv2d"``, ...) or its lower-cased class name
            (``"layernorm"``, ``"embedding"``, ``"multiheadattention"``).
        parameter: the parameter itself.
        trainable: ``parameter.requires_grad`` when the session was attached.
    """

    name: str
    module: str
    kind: str
    parameter: nn.Parameter
    trainable: bool

    def row(self) -> dict:
        """The ``meta["parameters"]`` entry."""
        return {
            "name": self.name,
            "module": self.module,
            "kind": self.kind,
            "shape": list(self.parameter.shape),
            "numel": self.parameter.numel(),
            "trainable": self.trainable,
        }


def module_kind(module: nn.Module) -> str:
    """The registered layer kind of ``module``, else its class name in lower case."""
    return layer_kind(module, strict=False) or type(module).__name__.lower()


def describe_parameters(model: nn.Module) -> list[ParameterInfo]:
    """Every distinct parameter of ``model`` (tied ones once) in ``named_parameters()`` order, frozen included."""
    labels = parameter_labels(model)
    infos = []
    for raw_module, module in model.named_modules():
        for short, parameter in module.named_parameters(prefix=raw_module, recurse=False):
            if short not in labels:  # a tied parameter already listed under its first name
                continue
            owner = raw_module if labels[short] == short else strip_wrappers(raw_module)
            infos.append(
                ParameterInfo(labels.pop(short), owner, module_kind(module), parameter, parameter.requires_grad)
            )
    return infos


def check_names(model: nn.Module, spec: ModelSpec) -> None:
    """Raise ``ValueError`` naming the first module declared in ``spec`` that ``model`` does not have.

    Names may be given with or without wrapper prefixes (see :mod:`gradlens.naming`).
    """
    modules = module_table(model)
    declared = [*spec.layer_names(), *spec.activations, *spec.blocks]
    if spec.final_activation is not None:
        declared.append(spec.final_activation)
    for name in declared:
        if name not in modules:
            shown = [strip_wrappers(n) for n in dict(model.named_modules()) if n][:4]
            raise ValueError(
                f"module {name!r} declared in the ModelSpec does not exist in {type(model).__name__}; "
                f"names look like {shown} (see model.named_modules())"
            )


def resolve_layers(model: nn.Module, spec: ModelSpec) -> list[LayerInfo]:
    """LayerInfo for each layer declared in ``spec`` (checked against ``model``), named without wrappers."""
    check_names(model, spec)
    modules = module_table(model)
    infos = []
    for layer in spec.layers:
        module = modules[layer.name]
        kind = LAYER_KINDS.get(type(module)) or layer_kind(module) or type(module).__name__.lower()
        if not isinstance(getattr(module, "weight", None), torch.Tensor):
            raise ValueError(
                f"layer {layer.name!r} ({type(module).__name__}) has no .weight tensor; "
                "list only modules with a .weight in layers=[...]"
            )
        infos.append(LayerInfo(strip_wrappers(layer.name), module, kind, layer.residual))
    return infos


class ForwardOrderTracer:
    """Records the order in which layer modules are first called during one forward pass.

    Installs one forward pre-hook per candidate module and removes them all after the first complete forward
    (a forward hook on the root) or on ``remove()``. With ``strict``, unknown parameter-owning module types
    raise at construction, before any training happens. Names are recorded without wrapper prefixes.
    """

    def __init__(self, model: nn.Module, strict: bool = True) -> None:
        self.order: list[str] = []
        self.done = False
        self.candidates: list[str] = []  # the layer modules hooked, in registration order
        self._handles = []
        for name, module in model.named_modules():
            if strip_wrappers(name) and layer_kind(module, strict) is not None:
                self.candidates.append(strip_wrappers(name))
                self._handles.append(module.register_forward_pre_hook(self._seen(strip_wrappers(name))))
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
        if not self.done:
            raise RuntimeError("no forward pass has been traced yet; run the model once before the first step")
        return ModelSpec(layers=tuple(LayerSpec(name) for name in self.order))
