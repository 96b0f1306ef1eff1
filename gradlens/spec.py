"""What a model declares to gradlens: its layers, activations and blocks.

Probes work on any model: a model may describe itself by defining ``gradlens_spec() -> ModelSpec``
(every model in :mod:`gradlens.models` does), a user may pass a ``ModelSpec`` to :func:`gradlens.attach`,
and otherwise the session discovers the layers (``nn.Linear``, ``nn.Conv1d/2d/3d`` and registered types)
in forward order on the first forward pass.

All names are dotted module names as given by ``model.named_modules()``.

**Feature axis** of an activation (the channel axis i of document 004's sub-activations a_i^(ℓ)): declared in
``ModelSpec.feature_dims``, else resolved by :func:`feature_dim` from the module that produced the values:
the last dim for ``nn.Linear``/``LayerNorm``/``Embedding``/attention outputs (``[B, T, H]``: hidden units,
not token positions), dim 1 for convolution/BatchNorm/GroupNorm outputs (``[B, C, *spatial]``), dim 1 for
any ``[B, C]``; anything else is refused with a message naming the activation, its shape and the fix.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from torch import nn

#: Modules whose output has its features in the last dim, and the attribute giving their width.
FEATURES_LAST: dict[type[nn.Module], str] = {
    nn.Linear: "out_features",
    nn.Bilinear: "out_features",
    nn.LayerNorm: "normalized_shape",
    nn.RMSNorm: "normalized_shape",
    nn.Embedding: "embedding_dim",
    nn.EmbeddingBag: "embedding_dim",
    nn.MultiheadAttention: "embed_dim",
}
#: Modules whose output has its channels in dim 1 (``[B, C, *spatial]``), and the attribute of their width.
FEATURES_FIRST: dict[type[nn.Module], str] = {
    nn.modules.conv._ConvNd: "out_channels",
    nn.modules.batchnorm._NormBase: "num_features",  # BatchNorm*, InstanceNorm*
    nn.GroupNorm: "num_channels",
}


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
        feature_dims: module name -> the feature (channel) axis of its output, e.g.
            ``{"encoder.layer.0": -1}``; activations not listed get :func:`feature_dim`'s default.
    """

    layers: tuple[LayerSpec, ...]
    activations: tuple[str, ...] = ()
    final_activation: str | None = None
    blocks: tuple[str, ...] = field(default_factory=tuple)
    feature_dims: Mapping[str, int] = field(default_factory=dict, hash=False)

    def layer_names(self) -> list[str]:
        """Names of the weight layers, in forward order."""
        return [layer.name for layer in self.layers]

    def validate(self, model: nn.Module) -> None:
        """Raise ``ValueError`` naming the first declared module that ``model`` does not have."""
        modules = dict(model.named_modules())
        declared = [*self.layer_names(), *self.activations, *self.blocks, *self.feature_dims]
        if self.final_activation is not None:
            declared.append(self.final_activation)
        for name in declared:
            if name not in modules:
                raise ValueError(
                    f"module {name!r} declared in the ModelSpec does not exist in {type(model).__name__}; "
                    f"names look like {list(modules)[1:4]} (see model.named_modules())"
                )


def feature_kind(module: nn.Module | None) -> tuple[str, int] | None:
    """("last" | "first", width) of a module type that fixes its output's feature axis (the tables above)."""
    if module is None:
        return None
    for table, kind in ((FEATURES_LAST, "last"), (FEATURES_FIRST, "first")):
        for module_type, attribute in table.items():
            if isinstance(module, module_type):
                width = getattr(module, attribute)
                return kind, int(width[-1] if isinstance(width, Sequence) else width)
    if type(module).__name__ == "Conv1D" and hasattr(module, "nf"):  # Hugging Face GPT-2 style linear layer
        return "last", int(module.nf)
    return None


def feature_dim(
    name: str, shape: Sequence[int], producer: nn.Module | None = None, declared: int | None = None
) -> int:
    """The feature (channel) axis of the output of module ``name``, as a non-negative dim of ``shape``.

    Rules, in order: ``declared`` (from ``ModelSpec.feature_dims`` or a probe argument); ``[B, C]`` -> 1;
    otherwise the module that produced the values (``producer``: the last module of a known type,
    :func:`feature_kind`, whose forward finished at or before the activation's) decides — ``nn.Linear``,
    ``LayerNorm``, ``Embedding``, ``MultiheadAttention`` (features last: ``[B, T, H]``) or convolution,
    ``BatchNorm``, ``GroupNorm`` (channels first: ``[B, C, *spatial]``) — unless the shape contradicts it: the
    producer's width sits on the other candidate axis (first or last) and not on its own, the trace of a
    transpose/permute after the producer. A different width on both axes (channels concatenated, as in a
    dense block) keeps the producer's axis.

    Raises:
        ValueError: naming the activation, its shape and how to declare the axis, when no rule decides.
    """
    shape = tuple(int(s) for s in shape)
    ndim = len(shape)
    fix = (
        f"declare it: ModelSpec(..., feature_dims={{{name!r}: -1}}) when the features are last ([B, T, H]) "
        f"or 1 for channels first ([B, C, *spatial]), or the probe's feature_dims={{{name!r}: ...}}"
    )
    if declared is not None:
        if ndim < 2 or not -ndim <= declared < ndim or declared % ndim == 0:
            raise ValueError(
                f"feature axis {declared} declared for activation {name!r} of shape {shape} is not a non-batch "
                f"dim; {fix}"
            )
        return declared % ndim
    if ndim < 2:
        raise ValueError(f"activation {name!r} has shape {shape}: no feature axis after the batch dim")
    if ndim == 2:
        return 1
    kind = feature_kind(producer)
    if kind is not None:
        side, width = kind
        own, other = (ndim - 1, 1) if side == "last" else (1, ndim - 1)
        if shape[own] == width or shape[other] != width:
            return own
    made_by = "no known layer" if producer is None else f"{type(producer).__name__}"
    if kind is not None:
        made_by += f" (width {kind[1]}, which is not dim {'-1' if kind[0] == 'last' else '1'} of the shape)"
    raise ValueError(
        f"activation {name!r} of shape {shape} has an ambiguous feature axis: it was produced by {made_by}; "
        f"{fix}"
    )
