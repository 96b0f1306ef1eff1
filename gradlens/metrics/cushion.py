"""Layer cushions and interlayer cushions (document 004, section 5; Arora et al., 2018).

Index letters: ``B`` samples of a batch, ``C`` channels, ``H, W`` (or any spatial dims) feature-map sizes,
``n`` the number of elements of one input sample, ``m`` the number of elements of one output sample.

All functions are pure (no hooks, no I/O) and return per-sample tensors of shape ``[B]``. A sample whose
result is not finite (NaN/inf input, zero input) gets ``NaN`` instead of an exception, so that a probe can
record and flag it during training.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
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

    Args:
        layer: ``nn.Linear`` or ``nn.Conv1d/2d/3d`` (any stride, padding, dilation, groups; zero padding).
        x: layer input ``[B, C_in, *spatial]`` (conv) or ``[B, ..., in_features]`` (linear).
        residual: the layer sits inside an identity skip ``f(x + layer(x))``; then A x must have x's shape.
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
            if ax.shape != x.shape:
                raise ValueError(
                    f"residual layer maps x {tuple(x.shape)} to {tuple(ax.shape)}: an identity skip needs "
                    f"equal shapes; pass residual=False for a layer that changes channels or size"
                )
            ax = x + ax
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


class InterlayerCushion(NamedTuple):
    """Result of :func:`interlayer_cushion`; every field is ``[B]`` except ``method``.

    Attributes:
        mu: μ_{i,j}(x^i) per sample.
        jx_norm: ‖J x^i‖.
        jac_fro: ‖J‖_F (exact, or the square root of the Hutchinson estimate of ‖J‖_F²).
        jac_fro_sq_se: standard error of the ‖J‖_F² estimate (0 for the exact route).
        method: ``"exact"`` or ``"hutchinson"``, the route actually taken.
    """

    mu: Tensor
    jx_norm: Tensor
    jac_fro: Tensor
    jac_fro_sq_se: Tensor
    method: str


_SAMPLE_COUPLING = (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd)


def _check_segment(f: Callable[[Tensor], Tensor]) -> None:
    if not isinstance(f, nn.Module):
        return
    for name, module in f.named_modules():
        if module.training and isinstance(module, _SAMPLE_COUPLING):
            raise ValueError(
                f"{type(module).__name__} {name or '<segment>'!r} is in train mode: it couples samples or "
                f"draws random numbers; call .eval() on the segment before measuring its interlayer cushion"
            )


def _segment_output(f: Callable[[Tensor], Tensor], x: Tensor) -> tuple[Tensor, Tensor]:
    """(f(x), J x) per sample by one forward-mode pass with tangent x."""
    y, jx = torch.func.jvp(f, (x,), (x,))
    if y.dim() < 1 or y.shape[0] != x.shape[0]:
        raise ValueError(
            f"segment maps x {tuple(x.shape)} to {tuple(y.shape)}; it must keep the batch dim first and act "
            f"on each sample separately"
        )
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


def jacobian_frobenius_sq(f: Callable[[Tensor], Tensor], x: Tensor, chunk_size: int = 32) -> Tensor:
    """Exact ‖J_b‖_F² of the per-sample Jacobian J_b = ∂f(x)_b/∂x_b for every sample b.

    ``‖J‖_F² = Σ_k ‖J e_k‖²`` over the input basis (n forward-mode JVPs) or ``Σ_k ‖Jᵀ e_k‖²`` over the
    output basis (m reverse-mode VJPs), whichever side is smaller. The products run batched with
    ``torch.func.vmap``, ``chunk_size`` basis vectors (times B samples) per call, so memory stays at about
    ``chunk_size`` forward passes of the batch.

    Args:
        f: segment acting on each sample separately (BN/dropout in eval mode), ``[B, *in] -> [B, *out]``.
        x: input ``[B, *in]``.
        chunk_size: basis vectors per batched call.

    Returns:
        ‖J_b‖_F² per sample ``[B]``.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    _check_segment(f)
    batch, in_shape = x.shape[0], tuple(x.shape[1:])
    with torch.no_grad():
        y = f(x)
    out_shape = tuple(y.shape[1:])
    n, m = math.prod(in_shape), math.prod(out_shape)
    total = torch.zeros(batch, dtype=y.dtype, device=y.device)
    if n <= m:
        def push(tangent: Tensor) -> Tensor:
            return torch.func.jvp(f, (x,), (tangent,))[1]

        with torch.no_grad():
            for start in range(0, n, chunk_size):
                tangents = _basis(start, min(n, start + chunk_size), batch, in_shape, x)
                total += torch.func.vmap(push)(tangents).flatten(2).pow(2).sum(dim=(0, 2))
        return total
    _, pull = torch.func.vjp(f, x)
    for start in range(0, m, chunk_size):
        cotangents = _basis(start, min(m, start + chunk_size), batch, out_shape, y)
        total += torch.func.vmap(pull)(cotangents)[0].detach().flatten(2).pow(2).sum(dim=(0, 2))
    return total


def jacobian_frobenius_sq_hutchinson(
    f: Callable[[Tensor], Tensor], x: Tensor, num_probes: int = 64, seed: int = 0, chunk_size: int = 32
) -> tuple[Tensor, Tensor]:
    """Hutchinson estimate of ‖J_b‖_F² per sample with its standard error.

    With Rademacher probes u on the output side (entries ±1, E[u uᵀ] = I), ``E‖Jᵀ u‖² = tr(J Jᵀ) = ‖J‖_F²``.
    The estimate is the mean of ``‖Jᵀ u_k‖²`` over k = 1..num_probes reverse-mode products (independent probes
    for every sample; one forward, then one backward per probe through the retained graph), and its standard
    error is the sample standard deviation (ddof 1) over k divided by √num_probes. Probes come from a local
    ``torch.Generator`` seeded with ``seed``; the global RNG is untouched. Reverse mode is used because on CPU
    it runs about 5× faster than batched forward-mode JVPs for convolutional blocks (benchmarks/bench_metrics.py).

    Args:
        f: segment acting on each sample separately (BN/dropout in eval mode), ``[B, *in] -> [B, *out]``.
        x: input ``[B, *in]``.
        num_probes: k ≥ 2.
        seed: seed of the local generator.
        chunk_size: probes drawn per call of the generator (the products themselves run one per backward).

    Returns:
        (estimate ``[B]``, standard error ``[B]``).
    """
    if num_probes < 2 or chunk_size < 1:
        raise ValueError(f"need num_probes >= 2 and chunk_size >= 1, got {num_probes} and {chunk_size}")
    _check_segment(f)
    generator = torch.Generator(device=x.device)
    generator.manual_seed(seed)
    source = x.detach().requires_grad_(True)
    with torch.enable_grad():
        y = f(source)
    samples = []
    for start in range(0, num_probes, chunk_size):
        count = min(num_probes, start + chunk_size) - start
        signs = torch.randint(0, 2, (count, *y.shape), generator=generator, device=y.device)
        for probe in (2 * signs - 1).to(y.dtype):
            (pulled,) = torch.autograd.grad(y, source, probe, retain_graph=True)
            samples.append(pulled.flatten(1).pow(2).sum(dim=1))
    squares = torch.stack(samples)  # [k, B]
    return squares.mean(dim=0), squares.std(dim=0, correction=1) / math.sqrt(num_probes)


def interlayer_cushion(
    f: Callable[[Tensor], Tensor],
    x: Tensor,
    method: str = "auto",
    *,
    chunk_size: int = 32,
    num_probes: int = 64,
    seed: int = 0,
    exact_max: int = AUTO_EXACT_MAX,
) -> InterlayerCushion:
    """Per-sample interlayer cushion of a segment (document 004, section 5; Arora et al., 2018)::

        μ_{i,j}(x^i) = √n_i · ‖J x^i‖ / (‖J‖_F · ‖x^i‖)

    J = J^{i,j}_{x^i} is the Jacobian of the segment f (layer i to layer j) at one sample x^i, and n_i the
    size of the input x^i to layer i: the number of elements of one sample (C·H·W). J x^i is one forward-mode
    JVP with tangent x^i. ‖J‖_F is exact (:func:`jacobian_frobenius_sq`) or a Hutchinson estimate
    (:func:`jacobian_frobenius_sq_hutchinson`).

    f must act on each sample separately: put BatchNorm (which couples samples in train mode) and dropout in
    eval mode first (a segment module in train mode is rejected); the probe restores the mode afterwards.

    Args:
        f: segment, e.g. a residual block module, ``[B, *in] -> [B, *out]``.
        x: segment input x^i ``[B, *in]``.
        method: ``"exact"``, ``"hutchinson"`` or ``"auto"`` (default): exact when
            ``min(n_i, m) <= exact_max`` (m = elements of one output sample), else Hutchinson with
            ``num_probes`` probes.
        chunk_size: JVPs/VJPs per batched call (bounds memory).
        num_probes: Hutchinson probes k.
        seed: seed of the Hutchinson generator.
        exact_max: threshold of ``"auto"``.

    Returns:
        :class:`InterlayerCushion` with ``mu`` ``[B]`` (NaN where not finite) and its parts.
    """
    if method not in ("exact", "hutchinson", "auto"):
        raise ValueError(f"method must be 'exact', 'hutchinson' or 'auto', got {method!r}")
    if x.dim() < 2:
        raise ValueError(f"x of shape {tuple(x.shape)} has no batch dim; pass [B, *sample_shape]")
    _check_segment(f)
    with torch.no_grad():
        y, jx = _segment_output(f, x)
    n, m = x[0].numel(), y[0].numel()
    if method == "auto":
        method = "exact" if min(n, m) <= exact_max else "hutchinson"
    if method == "exact":
        fro_sq = jacobian_frobenius_sq(f, x, chunk_size)
        se = torch.zeros_like(fro_sq)
    else:
        fro_sq, se = jacobian_frobenius_sq_hutchinson(f, x, num_probes, seed, chunk_size)
    jx_norm = jx.flatten(1).norm(dim=1)
    jac_fro = fro_sq.sqrt()
    mu = math.sqrt(n) * jx_norm / (jac_fro * x.flatten(1).norm(dim=1))
    return InterlayerCushion(_finite_or_nan(mu), jx_norm, jac_fro, se, method)
