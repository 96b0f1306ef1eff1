"""The maps T, T⁻¹ and T′ between simplified ResNets and PlnNets of document 004, and equivalent training.

**T** (document 004, eq. 1): a residual block ``relu(x̃ + conv(x; r))`` equals the plain block
``relu(conv(x; p))`` with ``p = T(r) = r + ρ``, where ``ρ [D, C, U, V]`` is 1 at the *ID entries*
``(c, c, centre, centre)`` for ``c < min(C, D)`` and 0 elsewhere; ``T⁻¹(p) = p − ρ``. On a network, T
and T⁻¹ act on the ``3N`` block convolutions (:meth:`SimplifiedNet.id_layer_names`); the stem, the
biases and the fully connected layer are unchanged.

**Channel-doubling layers.** The first convolution of groups ``G_1`` and ``G_2`` maps ``C`` to
``D = 2C`` channels with stride 2. Its ID entries are ``(c, c, centre)`` for ``c < C`` (the document's
``min(C, D)``): the identity it adds is the centre tap of a stride-2, padding-1 kernel, i.e.
``x̃ = x[:, :, ::2, ::2]`` in the first ``C`` output channels and 0 in the other ``C``, which is the
option-A (subsample + zero-pad) shortcut that :class:`~gradlens.models.simplified.SimplifiedBlock` uses.
T is therefore exact on every block, including these.

**Equivalent training** (document 004, section 4.1): train the plain net from ``p_0 = T(r_0)`` with the
weight-decay penalty ``‖T⁻¹(p)‖²`` and the residual net from ``r_0`` with ``‖r‖²``, on the same
mini-batches; the costs and gradients agree, so ``p_e = T(r_e)`` at every step (up to rounding).
:func:`decay_penalty` gives both penalties (``kind="t_inverse"`` and ``kind="l2"``). Every parameter
(weights and biases of all layers) is penalised in both, so the two penalties are equal.

**T′** (document 004, appendix D.3): the dominant-path network keeps, in every block kernel, only the
entries ``(d, d mod C)`` (a diagonal ``C × C`` matrix of 3×3 arrays within a group, two stacked
diagonals for a channel-doubling kernel) and adds the identity ``I`` at their centre taps. The document
defines both the upper and the lower ``C × C`` part of the between-group kernel ``T_r`` "in a similar way
as ``T_s = I + R_s``", so we add 1 to the centre of both stacked diagonals (the lower one gets 1 where T
would add nothing): ``T′(r) = M ⊙ r + J`` with the mask ``M`` of
:func:`~gradlens.models.simplified.dominant_mask` and ``J`` of
:func:`~gradlens.models.simplified.stacked_identity`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Literal

import torch
from torch import nn

from gradlens.models.simplified import Kind, SimplifiedNet, build_simplified, stacked_identity

StateDict = dict[str, torch.Tensor]


def id_entries(weight: torch.Tensor) -> torch.Tensor:
    """``ρ`` of document 004, eq. 1 for one kernel: 1 at ``(c, c, U_h, V_h)``, ``c < min(C, D)``.

    Args:
        weight: kernel ``[D, C, U, V]`` with odd ``U, V``.

    Returns:
        ``ρ`` with the shape, dtype and device of ``weight``.
    """
    if weight.dim() != 4 or weight.shape[2] % 2 == 0 or weight.shape[3] % 2 == 0:
        raise ValueError(f"ID entries need a [D, C, U, V] kernel with odd U, V; got {tuple(weight.shape)}")
    rho = torch.zeros_like(weight)
    channels = torch.arange(min(weight.shape[0], weight.shape[1]), device=weight.device)
    rho[channels, channels, weight.shape[2] // 2, weight.shape[3] // 2] = 1.0
    return rho


def _shift_id_entries(state: Mapping[str, torch.Tensor], layers: Iterable[str], sign: float) -> StateDict:
    out = {key: value.clone() for key, value in state.items()}
    for layer in layers:
        key = f"{layer}.weight"
        if key not in out:
            raise KeyError(f"state dict has no {key!r}; layers must name convolutions of the network")
        out[key] = out[key] + sign * id_entries(out[key])
    return out


def transform(state: Mapping[str, torch.Tensor], layers: Iterable[str]) -> StateDict:
    """``T``: residual parameters ``r`` -> equivalent plain parameters ``p = r + ρ`` (state-dict level).

    Args:
        state: a state dict (copied, not modified).
        layers: names of the convolutions that carry an identity (``SimplifiedNet.id_layer_names()``).
    """
    return _shift_id_entries(state, layers, 1.0)


def inverse_transform(state: Mapping[str, torch.Tensor], layers: Iterable[str]) -> StateDict:
    """``T⁻¹``: plain parameters ``p`` -> residual parameters ``r = p − ρ`` (state-dict level)."""
    return _shift_id_entries(state, layers, -1.0)


def _rebuild(model: SimplifiedNet, kind: Kind, state: Mapping[str, torch.Tensor]) -> SimplifiedNet:
    # Construction initialises (global RNG draws); fork the RNG so that building a twin has no side effect.
    with torch.random.fork_rng(devices=[]):
        twin = build_simplified(
            model.depth,
            kind=kind,
            num_classes=model.num_classes,
            in_channels=model.input_shape[0],
            image_size=model.input_shape[1],
            init=model.init,
        )
    reference = next(model.parameters())
    twin.to(dtype=reference.dtype, device=reference.device)
    twin.load_state_dict(state)
    return twin


def _require_kind(model: nn.Module, kind: str, what: str) -> SimplifiedNet:
    if not isinstance(model, SimplifiedNet) or model.kind != kind:
        got = getattr(model, "kind", type(model).__name__)
        raise ValueError(f"{what} needs a simplified {kind} net (simplified_{kind}_*), got {got!r}")
    return model


def equivalent_plain(resnet: nn.Module) -> SimplifiedNet:
    """The plain net ``p(x, T(r))`` input/output-equivalent to the simplified ResNet ``r(x, r)``."""
    net = _require_kind(resnet, "residual", "equivalent_plain")
    return _rebuild(net, "plain", transform(net.state_dict(), net.id_layer_names()))


def equivalent_residual(plain: nn.Module) -> SimplifiedNet:
    """The simplified ResNet ``r(x, T⁻¹(p))`` input/output-equivalent to the plain net ``p(x, p)``."""
    net = _require_kind(plain, "plain", "equivalent_residual")
    return _rebuild(net, "residual", inverse_transform(net.state_dict(), net.id_layer_names()))


def dominant_path(resnet: nn.Module) -> SimplifiedNet:
    """``T′``: the dominant-path net of a simplified ResNet (document 004, appendix D.3).

    Block kernels become ``M ⊙ r + J`` (see the module docstring); stem, biases and classifier are
    copied. Applied to an HMWI-initialised ResNet this is the initialisation of ``simplified_dominant_*``.
    """
    net = _require_kind(resnet, "residual", "dominant_path")
    state = {key: value.clone() for key, value in net.state_dict().items()}
    for layer in net.id_layer_names():
        conv = net.get_submodule(layer)
        eye = stacked_identity(conv.out_channels, conv.in_channels, conv.kernel_size[0]).to(conv.weight)
        mask = (eye.sum(dim=(2, 3), keepdim=True) > 0).to(conv.weight)
        state[f"{layer}.weight"] = mask * state[f"{layer}.weight"] + eye
        state[f"{layer}.mask"] = mask
    return _rebuild(net, "dominant", state)


def decay_penalty(model: nn.Module, kind: Literal["l2", "t_inverse"] = "l2") -> torch.Tensor:
    """Weight-decay penalty of document 004, section 4.1 (a differentiable scalar; multiply by λ).

    ``kind="l2"``: ``‖θ‖² = Σ_θ Σ θ²`` over all parameters (the residual net's ``‖r‖²``, or the ordinary
    penalty of any model). ``kind="t_inverse"``: ``‖T⁻¹(p)‖²`` of a simplified plain net, i.e. the ID
    entries count as ``(p − 1)²``; equal to ``‖r‖²`` of its equivalent ResNet, with equal gradients.

    Raises:
        ValueError: unknown ``kind``, or ``"t_inverse"`` on a model that is not a simplified plain net.
    """
    if kind == "l2":
        return torch.stack([(p**2).sum() for p in model.parameters()]).sum()
    if kind != "t_inverse":
        raise ValueError(f"unknown penalty kind {kind!r}; use 'l2' or 't_inverse'")
    net = _require_kind(model, "plain", "decay_penalty(kind='t_inverse')")
    shifted = {f"{layer}.weight" for layer in net.id_layer_names()}
    terms = [((p - id_entries(p) if name in shifted else p) ** 2).sum() for name, p in net.named_parameters()]
    return torch.stack(terms).sum()
