"""The layer cushion μ_ℓ(x) = ‖A x‖ / (‖A‖_F ‖x‖) per sample (document 004, section 5; Arora et al., 2018,
Definition 5), the identity part x̃ of a residual layer (document 004, eq. 1) and the summary of per-sample
cushions over the data.

Index letters: ``B`` samples, ``C`` input and ``D`` output channels; results are ``[B]``, NaN where not finite.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gradlens.metrics.cushion.operator_norm import _CONV_FUNCTIONS, layer_operator_frobenius_norm


def _linear_part(layer: nn.Module, x: Tensor) -> Tensor:
    """A x: the layer's output without bias, ``[B, ...]``."""
    if isinstance(layer, nn.Linear):
        return F.linear(x, layer.weight)
    conv = _CONV_FUNCTIONS[layer.weight.dim() - 2]
    return conv(x, layer.weight, None, layer.stride, layer.padding, layer.dilation, layer.groups)


def _check_layer_input(layer: nn.Module, x: Tensor) -> None:
    if isinstance(layer, nn.Linear):
        if x.dim() < 2 or x.shape[-1] != layer.in_features:
            raise ValueError(
                f"x of shape {tuple(x.shape)} does not fit nn.Linear(in_features={layer.in_features}); "
                f"pass the layer input [B, ..., {layer.in_features}]"
            )
        return
    if isinstance(layer, nn.modules.conv._ConvNd):
        dims = layer.weight.dim() - 2
        if x.dim() != dims + 2 or x.shape[1] != layer.in_channels:
            raise ValueError(
                f"x of shape {tuple(x.shape)} does not fit {type(layer).__name__}(in_channels="
                f"{layer.in_channels}); pass the layer input [B, {layer.in_channels}, *{dims} spatial dims]"
            )


def _finite_or_nan(values: Tensor) -> Tensor:
    return torch.where(torch.isfinite(values), values, torch.full_like(values, float("nan")))


def id_kernel(weight: Tensor) -> Tensor:
    """ρ of document 004, eq. 1: 1 at the ID entries ``(c, c, centre…)``, ``c < min(C, D)``, 0 elsewhere.

    Args:
        weight: kernel ``[D, C, *kernel]`` with odd kernel sizes, or a matrix ``[D, C]`` (``nn.Linear``).

    Returns:
        ρ with the shape, dtype and device of ``weight``.
    """
    if any(k % 2 == 0 for k in weight.shape[2:]):
        raise ValueError(f"ID entries sit at the kernel centre; kernel {tuple(weight.shape)} has an even size")
    rho = torch.zeros_like(weight)
    channels = torch.arange(min(weight.shape[0], weight.shape[1]), device=weight.device)
    centre = tuple(k // 2 for k in weight.shape[2:])
    rho[(channels, channels, *centre)] = 1.0
    return rho


def identity_part(layer: nn.Module, x: Tensor, out_shape: Sequence[int]) -> Tensor:
    """x̃: what the ID entries of document 004, eq. 1 add to the layer's output, ``[B, *out_shape[1:]]``.

    ``x`` itself when ``out_shape == x.shape`` (an identity skip). Otherwise the layer's map with ρ
    (:func:`id_kernel`) as its weight: for a convolution ``conv(x; ρ)`` with the layer's stride, padding and
    dilation — for the channel-doubling 3×3, stride-2, padding-1 convolution of a simplified ResNet that is
    ``x[:, :, ::2, ::2]`` in the first C output channels and 0 in the other D − C (the option-A shortcut of
    the block, on which T of eq. 1 is exact) —; for ``nn.Linear`` ``x[..., :min(C, D)]`` zero-padded to D.
    The channel axis is the layer's: dim 1 for convolutions, the last dim for ``nn.Linear``.

    Raises:
        ValueError: a shape-changing grouped convolution or one with an even kernel (no centre tap).
    """
    if tuple(out_shape) == tuple(x.shape):
        return x
    if isinstance(layer, nn.Linear):
        keep = min(layer.in_features, layer.out_features)
        return F.pad(x[..., :keep], (0, layer.out_features - keep))
    if layer.groups != 1 or any(k % 2 == 0 for k in layer.kernel_size):
        raise ValueError(
            f"{type(layer).__name__}(groups={layer.groups}, kernel_size={layer.kernel_size}) maps x "
            f"{tuple(x.shape)} to {tuple(out_shape)}: its ID entries (document 004, eq. 1) need groups=1 and "
            f"an odd kernel; pass residual=False for this layer"
        )
    conv = _CONV_FUNCTIONS[layer.weight.dim() - 2]
    rho = id_kernel(layer.weight.detach()).to(x.dtype)
    return conv(x, rho, None, layer.stride, layer.padding, layer.dilation)


def layer_cushion(layer: nn.Module, x: Tensor, residual: bool = False, out: Tensor | None = None) -> Tensor:
    """Per-sample layer cushion (document 004, section 5; Arora et al., 2018, Definition 5)::

        plain:     μ_ℓ(x) = ‖A x‖ / (‖A‖_F ‖x‖)
        residual:  μ_ℓ(x) = ‖x + A x‖ / (‖A‖_F ‖x‖)

    ``x = x^{ℓ−1}`` is the layer input (the previous layer's output after ReLU), ``A`` the layer's linear
    operator without bias, ‖·‖ the 2-norm of one whole sample and ‖A‖_F the Frobenius norm of the operator
    (:func:`layer_operator_frobenius_norm`, boundary-aware for convolutions). For a residual layer
    (block ``f(x + layer(x))``) the document measures the equivalent plain layer ``t = T(r)`` whose ID entries
    carry the identity: its output is ``x + A x``, and its Frobenius norm is taken "after removing 1 from the
    ID entries", which leaves the residual weights: ‖A‖_F of the layer's own weight. Arora et al.'s cushion of
    the layer is the minimum of μ over the data (:func:`cushion_summary`).

    The identity part ``x̃`` (written ``x`` above) is :func:`identity_part`: ``x`` itself when the layer keeps
    the shape, and for a layer that changes channels or size (the channel-doubling, stride-2 convolution
    that opens a group) the map of the ID entries of document 004, eq. 1 — the subsampled input in the
    first ``min(C, D)`` channels, zero in the others —, so every layer of a simplified ResNet is measured.

    Args:
        layer: ``nn.Linear`` or ``nn.Conv1d/2d/3d`` (any stride, padding, dilation, groups; zero padding).
        x: layer input ``[B, C_in, *spatial]`` (conv) or ``[B, ..., in_features]`` (linear).
        residual: the layer sits inside an identity skip ``f(x̃ + layer(x))`` (see :func:`identity_part`).
        out: the layer's output ``layer(x)`` if already at hand (e.g. captured by a forward hook); A x is then
            ``out − bias`` and no convolution is recomputed.

    Returns:
        μ per sample ``[B]``; NaN where it is not finite (zero or non-finite x).
    """
    _check_layer_input(layer, x)
    with torch.no_grad():
        if out is None:
            ax = _linear_part(layer, x)
        else:
            bias = layer.bias
            if bias is None:
                ax = out
            elif isinstance(layer, nn.Linear):
                ax = out - bias
            else:
                ax = out - bias.reshape(-1, *([1] * (out.dim() - 2)))
        if residual:
            ax = identity_part(layer, x, ax.shape) + ax
        frobenius = layer_operator_frobenius_norm(layer, tuple(x.shape[1:]))
        mu = ax.flatten(1).norm(dim=1) / (frobenius * x.flatten(1).norm(dim=1))
    return _finite_or_nan(mu)


def cushion_summary(mu: Tensor) -> dict[str, Tensor]:
    """Distribution summary of per-sample cushions ``mu`` ``[B]`` over the finite values.

    Returns:
        ``min`` (Arora et al.'s cushion: the minimum over the data), ``mean``, ``std`` (ddof 0), ``median``
        and ``nonfinite`` (the number of NaN/inf samples); the statistics are NaN if no value is finite.
    """
    finite = mu[torch.isfinite(mu)]
    nonfinite = torch.tensor(mu.numel() - finite.numel(), device=mu.device)
    if finite.numel() == 0:
        nan = torch.tensor(float("nan"), dtype=mu.dtype, device=mu.device)
        return {"min": nan, "mean": nan, "std": nan, "median": nan, "nonfinite": nonfinite}
    return {
        "min": finite.min(),
        "mean": finite.mean(),
        "std": finite.std(correction=0),
        "median": finite.median(),
        "nonfinite": nonfinite,
    }
