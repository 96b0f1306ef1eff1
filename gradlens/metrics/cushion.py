"""Layer cushions and interlayer cushions (document 004, section 5; Arora et al., 2018).

Index letters: ``B`` samples of a batch, ``C`` channels, ``H, W`` (or any spatial dims) feature-map sizes,
``n`` the number of elements of one input sample, ``m`` the number of elements of one output sample.

All functions are pure (no hooks, no I/O) and return per-sample tensors of shape ``[B]``. A sample whose
result is not finite (NaN/inf input, zero input) gets ``NaN`` instead of an exception, so that a probe can
record and flag it during training.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_CONV_FUNCTIONS = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}

#: Default of ``interlayer_cushion(method="auto")``: the exact route is used when the smaller side of the
#: per-sample Jacobian has at most this many elements (that many JVPs/VJPs, at most 4× the cost of the default
#: 64-probe Hutchinson estimate), else Hutchinson.
AUTO_EXACT_MAX = 256


def _tuple(value: int | Sequence[int], dims: int) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * dims
    return tuple(int(v) for v in value)


def _tap_counts(
    size: int, kernel: int, stride: int, pad_left: int, dilation: int, out_size: int
) -> list[int]:
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
        raise ValueError(
            f"ID entries sit at the kernel centre; kernel {tuple(weight.shape)} has an even size"
        )
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


#: Readings of BatchNorm inside a segment (argument ``bn_statistics`` of :func:`interlayer_cushion`).
BN_STATISTICS = ("running", "batch", "sample")
#: Automatic-differentiation routes (argument ``autodiff``).
AUTODIFF = ("auto", "forward", "reverse")


class InterlayerCushion(NamedTuple):
    """Result of :func:`interlayer_cushion`; every field is ``[B]`` except ``method`` and ``autodiff``.

    Attributes:
        mu: μ_{i,j}(x^i) per sample.
        jx_norm: ‖J x^i‖.
        jac_fro: ‖J‖_F (exact, or the square root of the Hutchinson estimate of ‖J‖_F²).
        jac_fro_sq_se: standard error of the ‖J‖_F² estimate (0 for the exact route).
        method: ``"exact"`` or ``"hutchinson"``, the route actually taken.
        autodiff: ``"forward"`` or ``"reverse"``, the differentiation route actually taken.
    """

    mu: Tensor
    jx_norm: Tensor
    jac_fro: Tensor
    jac_fro_sq_se: Tensor
    method: str
    autodiff: str = "forward"


def _check_segment(f: Callable[[Tensor], Tensor], bn_statistics: str = "running") -> None:
    """Reject modules in train mode that make f random (dropout) or, with running statistics, couple samples."""
    if not isinstance(f, nn.Module):
        if bn_statistics != "running":
            raise ValueError(
                f"bn_statistics={bn_statistics!r} needs the segment as an nn.Module (its BatchNorm layers are "
                f"switched to the statistics of the input); got {type(f).__name__}"
            )
        return
    coupling = (nn.modules.dropout._DropoutNd,)
    if bn_statistics == "running":
        coupling += (nn.modules.batchnorm._BatchNorm,)
    for name, module in f.named_modules():
        if module.training and isinstance(module, coupling):
            raise ValueError(
                f"{type(module).__name__} {name or '<segment>'!r} is in train mode: it couples samples or "
                f"draws random numbers; call .eval() on the segment before measuring its interlayer cushion "
                f"(BatchNorm normalising by its input: bn_statistics='batch' or 'sample')"
            )


@contextlib.contextmanager
def statistics_of_input(f: Callable[[Tensor], Tensor], bn_statistics: str) -> Iterator[None]:
    """Context manager: every BatchNorm of ``f`` normalises by the statistics of its own input.

    The running buffers are hidden (``running_mean = running_var = None``, ``track_running_stats = False``:
    ``F.batch_norm`` then uses the input's statistics in train and eval mode alike and updates nothing) and
    put back on exit, so they are neither read nor changed.

    Args:
        f: a module (other callables are left alone).
        bn_statistics: ``"batch"`` or ``"sample"`` switch the BatchNorm layers; ``"running"`` changes nothing.
    """
    if bn_statistics == "running" or not isinstance(f, nn.Module):
        yield
        return
    saved = [
        (m, m.running_mean, m.running_var, m.track_running_stats)
        for m in f.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
    ]
    try:
        for m, *_ in saved:
            m.running_mean, m.running_var, m.track_running_stats = None, None, False
        yield
    finally:
        for m, mean, var, track in saved:
            m.running_mean, m.running_var, m.track_running_stats = mean, var, track


def _as_tensor(out: object) -> Tensor:
    """A segment's output tensor: the output itself, or the first element of a tuple/list output."""
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], Tensor):
        return out[0]
    if not isinstance(out, Tensor):
        raise ValueError(
            f"segment returned {type(out).__name__}; it must return a tensor [B, *out] (or a tuple whose first "
            f"element is one); wrap it in a function that picks the output"
        )
    return out


def _segment_map(f: Callable[[Tensor], Tensor], bn_statistics: str) -> Callable[[Tensor], Tensor]:
    """The map of the batch that is differentiated: f itself, or f on each sample alone (``"sample"``)."""
    if bn_statistics == "sample":
        return lambda x: torch.cat([_as_tensor(f(x[b : b + 1])) for b in range(x.shape[0])])
    return lambda x: _as_tensor(f(x))


def _forward_ad_missing(error: Exception) -> bool:
    """True for the errors PyTorch raises when an operation has no forward-mode derivative."""
    text = str(error).lower()
    return isinstance(error, NotImplementedError) or any(
        key in text for key in ("forward ad", "forward-mode", "jvp", "forward mode")
    )


def _check_output(x: Tensor, y: Tensor) -> None:
    if y.dim() < 1 or y.shape[0] != x.shape[0]:
        raise ValueError(
            f"segment maps x {tuple(x.shape)} to {tuple(y.shape)}; it must keep the batch dim first and act "
            f"on each sample separately"
        )


def _segment_output(f: Callable[[Tensor], Tensor], x: Tensor) -> tuple[Tensor, Tensor]:
    """(f(x), J x) by one forward-mode pass with tangent x (J of the whole batch map)."""
    y, jx = torch.func.jvp(f, (x,), (x,))
    _check_output(x, y)
    return y, jx


def _basis(start: int, stop: int, batch: int, shape: Sequence[int], like: Tensor) -> Tensor:
    """Unit vectors e_start .. e_{stop−1} of one sample, repeated over the batch.

    Returns:
        ``[stop − start, B, *shape]``.
    """
    size = math.prod(shape)
    eye = torch.zeros(stop - start, size, dtype=like.dtype, device=like.device)
    eye[torch.arange(stop - start), torch.arange(start, stop)] = 1.0
    return eye[:, None, :].expand(stop - start, batch, size).reshape(stop - start, batch, *shape)


def _batch_basis(start: int, stop: int, shape: Sequence[int], like: Tensor) -> Tensor:
    """Unit vectors e_start .. e_{stop−1} of the whole batch ``shape = [B, *sample]`` (one 1 in one sample).

    Returns:
        ``[stop − start, *shape]``.
    """
    eye = torch.zeros(stop - start, math.prod(shape), dtype=like.dtype, device=like.device)
    eye[torch.arange(stop - start), torch.arange(start, stop)] = 1.0
    return eye.reshape(stop - start, *shape)


def _pull_rows(y: Tensor, source: Tensor, cotangents: Tensor) -> Tensor:
    """Jᵀ u for every cotangent u of ``cotangents [k, *y.shape]`` → ``[k, *source.shape]`` (reverse mode).

    One batched backward (``is_grads_batched``); an operation without a batching rule falls back to one
    backward per cotangent.
    """
    try:
        (rows,) = torch.autograd.grad(y, source, cotangents, retain_graph=True, is_grads_batched=True)
    except (RuntimeError, NotImplementedError):
        rows = torch.stack([torch.autograd.grad(y, source, u, retain_graph=True)[0] for u in cotangents])
    return rows.detach()


def _exact_reverse(
    g: Callable[[Tensor], Tensor], x: Tensor, coupled: bool, chunk_size: int
) -> tuple[Tensor, Tensor, Tensor]:
    """(f(x), J x, ‖J_b‖_F²) from the rows of J, one VJP per output element (reverse mode only).

    Per-sample maps: cotangent e_j repeated over the batch gives row j of every sample's J_b, so
    ``(J_b x_b)_j = ⟨row, x_b⟩`` and ``‖J_b‖_F² = Σ_j ‖row‖²`` (m VJPs). Coupled maps (batch statistics): the
    cotangent e_(b, j) gives row (b, j) of the Jacobian of the whole batch map, ``(J X)_(b, j) = ⟨row, X⟩``
    and ‖row‖² adds to ``‖J_b‖_F²`` (B·m VJPs).
    """
    source = x.detach().requires_grad_(True)
    with torch.enable_grad():
        y = g(source)
    _check_output(x, y)
    batch, out_shape = y.shape[0], tuple(y.shape[1:])
    m = math.prod(out_shape)
    total = torch.zeros(batch, dtype=y.dtype, device=y.device)
    if not coupled:
        jx = torch.zeros(batch, m, dtype=y.dtype, device=y.device)
        for start in range(0, m, chunk_size):
            stop = min(m, start + chunk_size)
            rows = _pull_rows(y, source, _basis(start, stop, batch, out_shape, y)).flatten(2)  # [k, B, n]
            total += rows.pow(2).sum(dim=(0, 2))
            jx[:, start:stop] = torch.einsum("kbn,bn->bk", rows, x.flatten(1))
        return y.detach(), jx.reshape(y.shape), total
    jx = torch.zeros(batch * m, dtype=y.dtype, device=y.device)
    for start in range(0, batch * m, chunk_size):
        stop = min(batch * m, start + chunk_size)
        rows = _pull_rows(y, source, _batch_basis(start, stop, y.shape, y)).flatten(1)  # [k, B·n]
        owner = torch.arange(start, stop, device=y.device) // m
        total.index_add_(0, owner, rows.pow(2).sum(dim=1))
        jx[start:stop] = rows @ x.flatten()
    return y.detach(), jx.reshape(y.shape), total


def _exact_forward(g: Callable[[Tensor], Tensor], x: Tensor, y: Tensor, coupled: bool, chunk_size: int) -> Tensor:
    """‖J_b‖_F² per sample: JVPs over the input basis or VJPs over the output basis, the smaller side.

    Coupled maps: J_b is the Jacobian of sample b's output with respect to the whole batch (its row block
    of the batch map's Jacobian), so the bases run over the whole batch (B·n or B·m products).
    """
    batch, in_shape, out_shape = x.shape[0], tuple(x.shape[1:]), tuple(y.shape[1:])
    n, m = math.prod(in_shape), math.prod(out_shape)
    total = torch.zeros(batch, dtype=y.dtype, device=y.device)
    if n <= m:
        def push(tangent: Tensor) -> Tensor:
            return torch.func.jvp(g, (x,), (tangent,))[1]

        size = batch * n if coupled else n
        with torch.no_grad():
            for start in range(0, size, chunk_size):
                stop = min(size, start + chunk_size)
                tangents = (
                    _batch_basis(start, stop, x.shape, x) if coupled else _basis(start, stop, batch, in_shape, x)
                )
                total += torch.func.vmap(push)(tangents).flatten(2).pow(2).sum(dim=(0, 2))
        return total
    source = x.detach().requires_grad_(True)
    with torch.enable_grad():
        out = g(source)
    size = batch * m if coupled else m
    for start in range(0, size, chunk_size):
        stop = min(size, start + chunk_size)
        if coupled:
            rows = _pull_rows(out, source, _batch_basis(start, stop, y.shape, y)).flatten(1)
            owner = torch.arange(start, stop, device=y.device) // m
            total.index_add_(0, owner, rows.pow(2).sum(dim=1))
        else:
            rows = _pull_rows(out, source, _basis(start, stop, batch, out_shape, y))
            total += rows.flatten(2).pow(2).sum(dim=(0, 2))
    return total


def jacobian_frobenius_sq(
    f: Callable[[Tensor], Tensor], x: Tensor, chunk_size: int = 32, *, autodiff: str = "auto"
) -> Tensor:
    """Exact ‖J_b‖_F² of the per-sample Jacobian J_b = ∂f(x)_b/∂x_b for every sample b.

    ``‖J‖_F² = Σ_k ‖J e_k‖²`` over the input basis (n forward-mode JVPs) or ``Σ_k ‖Jᵀ e_k‖²`` over the
    output basis (m reverse-mode VJPs), whichever side is smaller. The products run batched,
    ``chunk_size`` basis vectors (times B samples) per call, so memory stays at about ``chunk_size`` forward
    passes of the batch. ``autodiff="reverse"`` (or ``"auto"`` where an operation has no forward-mode
    derivative, e.g. CPU flash attention) takes the output side whatever its size.

    Args:
        f: segment acting on each sample separately (BN/dropout in eval mode), ``[B, *in] -> [B, *out]``.
        x: input ``[B, *in]``.
        chunk_size: basis vectors per batched call.
        autodiff: ``"auto"``, ``"forward"`` or ``"reverse"``.

    Returns:
        ‖J_b‖_F² per sample ``[B]``.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if autodiff not in AUTODIFF:
        raise ValueError(f"autodiff must be one of {AUTODIFF}, got {autodiff!r}")
    _check_segment(f)
    g = _segment_map(f, "running")
    if autodiff != "reverse":
        with torch.no_grad():
            y = g(x)
        try:
            return _exact_forward(g, x, y, False, chunk_size)
        except (NotImplementedError, RuntimeError) as error:
            if autodiff == "forward" or not _forward_ad_missing(error):
                raise
    return _exact_reverse(g, x, False, chunk_size)[2]


def _rademacher(generator: torch.Generator, shape: Sequence[int], like: Tensor) -> Tensor:
    signs = torch.randint(0, 2, tuple(shape), generator=generator, device=like.device)
    return (2 * signs - 1).to(like.dtype)


def jacobian_frobenius_sq_hutchinson(
    f: Callable[[Tensor], Tensor], x: Tensor, num_probes: int = 64, seed: int = 0, chunk_size: int = 32
) -> tuple[Tensor, Tensor]:
    """Hutchinson estimate of ‖J_b‖_F² per sample with its standard error.

    With Rademacher probes u on the output side (entries ±1, E[u uᵀ] = I), ``E‖Jᵀ u‖² = tr(J Jᵀ) = ‖J‖_F²``.
    The estimate is the mean of ``‖Jᵀ u_k‖²`` over k = 1..num_probes reverse-mode products (independent probes
    for every sample; one forward, then one backward per probe through the retained graph), and its standard
    error is the sample standard deviation (ddof 1) over k divided by √num_probes. Probes come from a local
    ``torch.Generator`` seeded with ``seed``; the global RNG is untouched. Reverse mode is used because on CPU
    it runs about 5× faster than batched forward-mode JVPs for convolutional blocks (benchmarks/bench_metrics.py),
    and it needs no forward-mode derivatives.

    Args:
        f: segment acting on each sample separately (BN/dropout in eval mode), ``[B, *in] -> [B, *out]``.
        x: input ``[B, *in]``.
        num_probes: k ≥ 2.
        seed: seed of the local generator.
        chunk_size: probes drawn per call of the generator (the products themselves run one per backward).

    Returns:
        (estimate ``[B]``, standard error ``[B]``).
    """
    _check_segment(f)
    return _hutchinson(_segment_map(f, "running"), x, False, num_probes, seed, chunk_size)


def _hutchinson(
    g: Callable[[Tensor], Tensor], x: Tensor, coupled: bool, num_probes: int, seed: int, chunk_size: int
) -> tuple[Tensor, Tensor]:
    """Hutchinson ‖J_b‖_F² (see :func:`jacobian_frobenius_sq_hutchinson`).

    Coupled maps (batch statistics): Rademacher probes v on the *input* side of the whole batch map, one JVP
    each; ``E‖(J v)_b‖² = Σ_c ‖∂f_b/∂x_c‖_F² = ‖J_b‖_F²``, sample b's row block.
    """
    if num_probes < 2 or chunk_size < 1:
        raise ValueError(f"need num_probes >= 2 and chunk_size >= 1, got {num_probes} and {chunk_size}")
    generator = torch.Generator(device=x.device)
    generator.manual_seed(seed)
    samples = []
    if coupled:
        with torch.no_grad():
            for start in range(0, num_probes, chunk_size):
                count = min(num_probes, start + chunk_size) - start
                for probe in _rademacher(generator, (count, *x.shape), x):
                    pushed = torch.func.jvp(g, (x,), (probe,))[1]
                    samples.append(pushed.flatten(1).pow(2).sum(dim=1))
    else:
        source = x.detach().requires_grad_(True)
        with torch.enable_grad():
            y = g(source)
        for start in range(0, num_probes, chunk_size):
            count = min(num_probes, start + chunk_size) - start
            for probe in _rademacher(generator, (count, *y.shape), y):
                (pulled,) = torch.autograd.grad(y, source, probe, retain_graph=True)
                samples.append(pulled.flatten(1).pow(2).sum(dim=1))
    squares = torch.stack(samples)  # [k, B]
    return squares.mean(dim=0), squares.std(dim=0, correction=1) / math.sqrt(num_probes)


def check_interlayer_options(method: str, bn_statistics: str, autodiff: str) -> None:
    """ValueError naming the bad value and the choices, for the options of :func:`interlayer_cushion`."""
    if method not in ("exact", "hutchinson", "auto"):
        raise ValueError(f"method must be 'exact', 'hutchinson' or 'auto', got {method!r}")
    if bn_statistics not in BN_STATISTICS:
        raise ValueError(f"bn_statistics must be one of {BN_STATISTICS}, got {bn_statistics!r}")
    if autodiff not in AUTODIFF:
        raise ValueError(f"autodiff must be one of {AUTODIFF}, got {autodiff!r}")


def interlayer_cushion(
    f: Callable[[Tensor], Tensor],
    x: Tensor,
    method: str = "auto",
    *,
    chunk_size: int = 32,
    num_probes: int = 64,
    seed: int = 0,
    exact_max: int = AUTO_EXACT_MAX,
    bn_statistics: str = "running",
    autodiff: str = "auto",
) -> InterlayerCushion:
    """Per-sample interlayer cushion of a segment (document 004, section 5; Arora et al., 2018)::

        μ_{i,j}(x^i) = √n_i · ‖J x^i‖ / (‖J‖_F · ‖x^i‖)

    J = J^{i,j}_{x^i} is the Jacobian of the segment f (layer i to layer j) at one sample x^i, and n_i the
    size of the input x^i to layer i: the number of elements of one sample (C·H·W). J x^i is one forward-mode
    JVP with tangent x^i. ‖J‖_F is exact (:func:`jacobian_frobenius_sq`) or a Hutchinson estimate
    (:func:`jacobian_frobenius_sq_hutchinson`).

    **BatchNorm** (``bn_statistics``): which statistics a BatchNorm inside the segment normalises by.

    - ``"running"`` (default): the running statistics (eval mode). f acts on each sample separately; every
      BN is an affine map. BN in train mode is rejected.
    - ``"sample"``: the statistics of each sample alone (as training-mode BN on a batch of that one sample:
      per channel over the spatial positions). f still acts on each sample separately, and J is that
      sample's Jacobian. A block whose convolutions have no bias is then scale-invariant up to BN's ε:
      f(t x) = f(x), so J x = d/dt f(t x)|_{t=1} is ε-sized.
    - ``"batch"``: the statistics of the batch ``x`` itself (training-mode BN on the probe batch, running
      buffers neither read nor updated). The segment then maps the batch X = (x_1 .. x_B), not each sample:
      sample b's output depends on every sample. We read the document's definition on that batch map:
      ``J x^i`` is sample b's part of the JVP of the batch map along the batch itself, ``(J X)_b =
      d/dt f_b(t X)|_{t=1}`` (the batch seen by the block, scaled), and ``‖J‖_F`` is the Frobenius norm of
      sample b's row block ``∂f_b/∂X`` (columns of all samples; its off-diagonal blocks only carry the
      batch statistics, O(1/B) each); n_i and ‖x^i‖ stay those of sample b. Scaling the whole batch leaves
      a bias-free conv-BN block unchanged up to ε, so a plain conv-BN-ReLU-conv-BN-ReLU block has
      μ ∝ ε, while a residual block keeps J X ≈ D x (D the final ReLU's mask) and μ of order 0.1-1.

    In the readings from the input (``"batch"``, ``"sample"``) BN in train mode is allowed; dropout must be
    in eval mode in every reading. The BN modules' running buffers are hidden while measuring and put back.

    **Differentiation** (``autodiff``): ``"forward"`` takes J x as one forward-mode JVP (and ‖J‖_F over the
    smaller side); ``"reverse"`` uses reverse mode only: J x and the exact ‖J‖_F² both come from the rows
    of J, one VJP per output element (m per sample, B·m for ``"batch"``), so the result is exact whatever
    ``method`` asks; ``"auto"`` (default) tries forward mode and takes the reverse route when an operation
    has no forward-mode derivative (CPU flash attention ``_scaled_dot_product_flash_attention_for_cpu`` of
    SDPA attention, custom autograd functions without ``jvp``).

    Args:
        f: segment, e.g. a residual block module, ``[B, *in] -> [B, *out]`` (a tuple output: its first element).
        x: segment input x^i ``[B, *in]``.
        method: ``"exact"``, ``"hutchinson"`` or ``"auto"`` (default): exact when the number of products
            ``min(n_i, m)`` (times B for ``"batch"``) is at most ``exact_max``, else Hutchinson with
            ``num_probes`` probes (m = elements of one output sample).
        chunk_size: JVPs/VJPs per batched call (bounds memory).
        num_probes: Hutchinson probes k.
        seed: seed of the Hutchinson generator.
        exact_max: threshold of ``"auto"``.
        bn_statistics: ``"running"``, ``"sample"`` or ``"batch"`` (see above).
        autodiff: ``"auto"``, ``"forward"`` or ``"reverse"`` (see above).

    Returns:
        :class:`InterlayerCushion` with ``mu`` ``[B]`` (NaN where not finite) and its parts.
    """
    check_interlayer_options(method, bn_statistics, autodiff)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if x.dim() < 2:
        raise ValueError(f"x of shape {tuple(x.shape)} has no batch dim; pass [B, *sample_shape]")
    _check_segment(f, bn_statistics)
    coupled = bn_statistics == "batch"
    g = _segment_map(f, bn_statistics)
    x = x.detach()
    with statistics_of_input(f, bn_statistics):
        route = autodiff
        if route != "reverse":
            try:
                with torch.no_grad():
                    y, jx = _segment_output(g, x)
                route = "forward"
            except (NotImplementedError, RuntimeError) as error:
                if route == "forward" or not _forward_ad_missing(error):
                    raise
                route = "reverse"
        if route == "reverse":
            y, jx, fro_sq = _exact_reverse(g, x, coupled, chunk_size)
            method, se = "exact", torch.zeros_like(fro_sq)
        else:
            n, m = x[0].numel(), y[0].numel()
            if method == "auto":
                products = min(n, m) * (x.shape[0] if coupled else 1)
                method = "exact" if products <= exact_max else "hutchinson"
            if method == "exact":
                fro_sq = _exact_forward(g, x, y, coupled, chunk_size)
                se = torch.zeros_like(fro_sq)
            else:
                fro_sq, se = _hutchinson(g, x, coupled, num_probes, seed, chunk_size)
    jx_norm = jx.flatten(1).norm(dim=1)
    jac_fro = fro_sq.sqrt()
    n = x[0].numel()
    mu = math.sqrt(n) * jx_norm / (jac_fro * x.flatten(1).norm(dim=1))
    return InterlayerCushion(_finite_or_nan(mu), jx_norm, jac_fro, se, method, route)
