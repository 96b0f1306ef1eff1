"""‖J_b‖_F², the squared Frobenius norm of each sample's Jacobian of a segment: exact (JVPs over the input
basis or VJPs over the output basis, whichever side is smaller) or a Hutchinson estimate with its standard
error. Coupled maps (BatchNorm on batch statistics) take sample b's row block of the whole batch map's Jacobian.

Index letters: ``B`` samples, ``n`` elements of one input sample, ``m`` of one output sample, ``k`` basis
vectors or probes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from gradlens.metrics.cushion.segment import (
    AUTODIFF,
    _check_output,
    _check_segment,
    _forward_ad_missing,
    _segment_map,
)


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
                tangents = _batch_basis(start, stop, x.shape, x) if coupled else _basis(start, stop, batch, in_shape, x)
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
