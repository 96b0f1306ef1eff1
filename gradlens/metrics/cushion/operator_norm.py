"""‖A‖_F, the Frobenius norm of a layer's linear operator on one input sample (bias excluded), the
denominator of the layer cushion (document 004, section 5): exact and boundary-aware for zero-padded
convolutions, without materialising the operator.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_CONV_FUNCTIONS = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def _tuple(value: int | Sequence[int], dims: int) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * dims
    return tuple(int(v) for v in value)


def _tap_counts(size: int, kernel: int, stride: int, pad_left: int, dilation: int, out_size: int) -> list[int]:
    """Per kernel offset ``u``: the number of output positions ``o`` whose tap ``o·s − pad + u·d`` is inside
    ``[0, size)``."""
    counts = []
    for u in range(kernel):
        shift = pad_left - u * dilation
        lo = max(0, -(-shift // stride))  # ceil(shift / stride)
        hi = min(out_size - 1, (size - 1 + shift) // stride)
        counts.append(max(0, hi - lo + 1))
    return counts


def _conv_geometry(
    kernel_size: Sequence[int],
    input_size: Sequence[int],
    stride: Sequence[int],
    padding: str | Sequence[int],
    dilation: Sequence[int],
) -> list[tuple[int, int]]:
    """Per spatial dim: (left padding, output size), following ``torch.nn.functional.conv*d``."""
    geometry = []
    for i, (k, size, s, d) in enumerate(zip(kernel_size, input_size, stride, dilation, strict=True)):
        if padding == "valid":
            left, total = 0, 0
        elif padding == "same":
            total = d * (k - 1)
            left = total // 2
        else:
            left = int(padding[i])
            total = 2 * left
        out = (size + total - d * (k - 1) - 1) // s + 1
        if out < 1:
            raise ValueError(
                f"input size {tuple(input_size)} is too small for kernel {tuple(kernel_size)} with stride "
                f"{tuple(stride)}, padding {padding!r}, dilation {tuple(dilation)}: the output is empty"
            )
        geometry.append((left, out))
    return geometry


def conv_operator_frobenius_norm(
    weight: Tensor,
    input_size: Sequence[int],
    stride: int | Sequence[int] = 1,
    padding: str | int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
) -> Tensor:
    """Exact Frobenius norm ‖A‖_F of the linear operator of a zero-padded convolution (bias excluded).

    A maps one input sample ``[C_in, *input_size]`` to one output sample ``[C_out, *output_size]``. Each
    kernel tap ``w[o, c, u]`` appears in A once per output position whose tap lands inside the unpadded
    input, so with ``N_t(u_t)`` the number of such output positions along spatial dim ``t`` (a count that is
    separable over the spatial dims)::

        ‖A‖_F² = Σ_{o, c, u} w[o, c, u]² · Π_t N_t(u_t)

    This costs O(kernel size) and needs no materialised matrix. Groups do not enter the formula (every weight
    entry is still used once per valid output position), so any ``groups`` is covered.

    Args:
        weight: kernel ``[C_out, C_in / groups, *kernel_size]`` (1, 2 or 3 spatial dims).
        input_size: spatial size of one input sample, e.g. ``(H, W)``.
        stride, padding, dilation: as in ``torch.nn.functional.conv2d`` (``padding`` may be ``"same"`` or
            ``"valid"``); zero padding only.

    Returns:
        0-dim tensor ‖A‖_F, dtype and device of ``weight``.
    """
    dims = weight.dim() - 2
    if dims not in _CONV_FUNCTIONS or len(input_size) != dims:
        raise ValueError(
            f"weight of shape {tuple(weight.shape)} and input_size {tuple(input_size)} do not describe a "
            f"1-3 d convolution; pass weight [C_out, C_in/groups, *kernel] and one size per spatial dim"
        )
    kernel = tuple(weight.shape[2:])
    pad = padding if isinstance(padding, str) else _tuple(padding, dims)
    geometry = _conv_geometry(kernel, input_size, _tuple(stride, dims), pad, _tuple(dilation, dims))
    multiplicity = torch.ones((), dtype=weight.dtype, device=weight.device)
    for t, ((left, out), k, size, s, d) in enumerate(
        zip(geometry, kernel, input_size, _tuple(stride, dims), _tuple(dilation, dims), strict=True)
    ):
        counts = torch.tensor(_tap_counts(size, k, s, left, d, out), dtype=weight.dtype, device=weight.device)
        shape = [1] * dims
        shape[t] = k
        multiplicity = multiplicity * counts.reshape(shape)
    squares = weight.detach().pow(2).sum(dim=(0, 1))  # [*kernel]
    return (squares * multiplicity).sum().sqrt()


def layer_operator_frobenius_norm(layer: nn.Module, input_shape: Sequence[int]) -> Tensor:
    """‖A‖_F of the linear operator of ``layer`` (bias excluded) acting on one input sample.

    ``nn.Linear`` applied to a sample ``[*, in_features]`` acts on each of the ``K = prod(*)`` rows, so
    ``‖A‖_F = √K · ‖W‖_F``; ``nn.Conv1d/2d/3d``: :func:`conv_operator_frobenius_norm`.

    Args:
        layer: ``nn.Linear`` or ``nn.Conv1d/2d/3d`` (zero padding).
        input_shape: shape of one input sample, without the batch dim (``[C_in, H, W]`` or ``[in_features]``).

    Returns:
        0-dim tensor ‖A‖_F.
    """
    if isinstance(layer, nn.Linear):
        rows = math.prod(input_shape[:-1])
        return layer.weight.detach().norm() * math.sqrt(rows)
    if isinstance(layer, nn.modules.conv._ConvNd) and not layer.transposed:
        if layer.padding_mode != "zeros":
            raise ValueError(
                f"{type(layer).__name__} has padding_mode={layer.padding_mode!r}; the cushion supports only "
                f"zero padding (padding_mode='zeros')"
            )
        return conv_operator_frobenius_norm(
            layer.weight, tuple(input_shape[1:]), layer.stride, layer.padding, layer.dilation
        )
    raise ValueError(
        f"no layer-cushion handler for {type(layer).__name__}; supported: nn.Linear, nn.Conv1d/2d/3d "
        f"(wrap other linear maps in one of these)"
    )
