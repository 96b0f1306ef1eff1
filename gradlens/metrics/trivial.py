"""The trivial case of dominant gradient flow (document 004, appendix D.4.1, Figure 11).

All kernels are 1×1 and activations are vectors of n units. For layers m = l+1..L (``depth = L − l``
matrices)::

    Θ^(ℓ) = [Π_{m=l+1}^{L} (K^(m))ᵀ S^(m)] V          (product taken left to right in m)

residual K = I + εA, plain K' = A' (entries of A, A' i.i.d. N(0, σ_A²)), S^(m) diagonal with Bernoulli(p)
entries, V diagonal with N(0, σ_V²) entries. Per draw, ``σ = (1/n) Σ_i 1[|Θ_ii| > |R_i|]`` with
``R_i = Σ_{j≠i} Θ_ij`` (eq. 6 and 13 with P = 1; 0/0 counts as no dominant flow, as in
:func:`gradlens.metrics.dominant_flow`), and E[σ^(ℓ)] is its mean over draws.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

#: Draws per vectorised chunk of :func:`trivial_sigma` (bounds memory to ~chunk·(L−l)·n² float64).
CHUNK_DRAWS = 8192


def _check(n: int, L: int, l: int, p: float) -> None:
    if n < 2 or not 0 <= l < L or not 0 <= p <= 1:
        raise ValueError(f"need n >= 2, 0 <= l < L and 0 <= p <= 1, got n={n}, L={L}, l={l}, p={p}")


def trivial_sigma_draws(a: Tensor, s: Tensor, v: Tensor, eps: float = 0.1, residual: bool = True) -> Tensor:
    """σ of each draw from given random matrices (vectorised over draws).

    Args:
        a: A^(m) for m = l+1..L, ``[draws, L−l, n, n]`` (already scaled by σ_A).
        s: diagonals of S^(m), ``[draws, L−l, n]`` (0 or 1).
        v: diagonal of V, ``[draws, n]`` (already scaled by σ_V).
        eps: ε of the residual kernel K = I + εA (unused for plain nets, K' = A').
        residual: residual (K = I + εA) or plain (K' = A).

    Returns:
        σ per draw ``[draws]``.
    """
    draws, depth, n, _ = a.shape
    if s.shape != (draws, depth, n) or v.shape != (draws, n):
        raise ValueError(
            f"shapes a {tuple(a.shape)}, s {tuple(s.shape)}, v {tuple(v.shape)} do not match; expected "
            f"[draws, L-l, n, n], [draws, L-l, n], [draws, n]"
        )
    eye = torch.eye(n, dtype=a.dtype, device=a.device)
    theta = eye.expand(draws, n, n)
    for m in range(depth):
        kernel = eye + eps * a[:, m] if residual else a[:, m]
        theta = theta @ (kernel.transpose(1, 2) * s[:, m, None, :])  # (Kᵀ S)_{ij} = K_ji S_jj
    theta = theta * v[:, None, :]  # · V
    diagonal = torch.diagonal(theta, dim1=1, dim2=2)
    rest = (theta - torch.diag_embed(diagonal)).sum(dim=2)  # Σ_{j≠i} Θ_ij without cancellation
    return (diagonal.abs() > rest.abs()).to(a.dtype).mean(dim=1)


def trivial_sigma(
    n: int = 20,
    eps: float = 0.1,
    L: int = 10,
    l: int = 5,
    p: float = 0.9,
    sigma_a: float = 0.01,
    sigma_v: float = 0.1,
    residual: bool = True,
    draws: int = 100_000,
    seed: int = 0,
) -> tuple[float, float]:
    """Monte Carlo E[σ^(ℓ)] of the trivial case (document 004, appendix D.4.1, Figure 11).

    Draws come from a local ``torch.Generator(seed)`` in float64, in chunks of :data:`CHUNK_DRAWS`; per chunk
    of c draws, in this order: ``A = σ_A · randn(c, L−l, n, n)``, ``S = (rand(c, L−l, n) < p)``,
    ``V = σ_V · randn(c, n)``; σ per draw by :func:`trivial_sigma_draws`.

    Args:
        n: units per layer.
        eps: ε of K = I + εA (residual).
        L: total number of layers.
        l: the layer ℓ measured (0 <= l < L); L − l matrices enter the product.
        p: P[S_ii = 1].
        sigma_a: σ_A, standard deviation of the entries of A (and of A' for plain nets).
        sigma_v: σ_V, standard deviation of the diagonal of V.
        residual: residual (K = I + εA) or plain (K' = A') nets.
        draws: Monte Carlo draws.
        seed: seed of the local generator.

    Returns:
        (mean of σ over the draws, its standard error std/√draws).
    """
    _check(n, L, l, p)
    if draws < 2:
        raise ValueError(f"need draws >= 2 for a standard error, got {draws}")
    generator = torch.Generator().manual_seed(seed)
    depth = L - l
    total = 0.0
    total_sq = 0.0
    for start in range(0, draws, CHUNK_DRAWS):
        count = min(draws, start + CHUNK_DRAWS) - start
        a = sigma_a * torch.randn(count, depth, n, n, generator=generator, dtype=torch.float64)
        s = (torch.rand(count, depth, n, generator=generator, dtype=torch.float64) < p).to(torch.float64)
        v = sigma_v * torch.randn(count, n, generator=generator, dtype=torch.float64)
        sigma = trivial_sigma_draws(a, s, v, eps, residual)
        total += float(sigma.sum())
        total_sq += float(sigma.pow(2).sum())
    mean = total / draws
    variance = max(0.0, (total_sq - draws * mean**2) / (draws - 1))
    return mean, math.sqrt(variance / draws)


def p_prime(p: float, depth: int) -> float:
    """p' = Σ_{m=l+1}^{L} p^{2(L−m+1)} = p²(1 − p^{2(L−l)}) / (1 − p²) (document 004, after eq. 10).

    Summed term by term, so p = 1 gives L − l without 0/0.

    Args:
        p: P[S_ii = 1].
        depth: L − l.
    """
    return sum(p ** (2 * k) for k in range(1, depth + 1))


def trivial_sigma_eq11(
    n: int = 20,
    eps: float = 0.1,
    L: int = 10,
    l: int = 5,
    p: float = 0.9,
    sigma_a: float = 0.01,
    c: float = 1.2,
) -> float:
    """Analytical E[σ^(ℓ)] with p' (document 004, eq. 11 and the line after it)::

        E[σ^(ℓ)] ≈ p^(L−l) / (1 + r^(−c)),   r = √(1 + ε²(L−l)σ_A²) / √(ε²(n−1) p' σ_A²)

    with p' from :func:`p_prime` and c = 1.2 (eq. 15). Independent of σ_V. Returns 0 for p = 0.
    """
    _check(n, L, l, p)
    if p == 0:
        return 0.0
    return _dominant_fraction(n, eps, L - l, p, sigma_a, c, paths=p_prime(p, L - l))


def trivial_sigma_conclusion(
    n: int = 20,
    eps: float = 0.1,
    L: int = 10,
    l: int = 5,
    p: float = 0.9,
    sigma_a: float = 0.01,
    c: float = 1.2,
) -> float:
    """Analytical E[σ^(ℓ)] as stated "In conclusion" (document 004, end of the residual-net part of D.4.1)::

        E[σ^(ℓ)] ≈ p^(L−l) / (1 + r^(−c)),   r = √(1 + (L−l)ε²σ_A²) / (ε √((L−l)(n−1)) σ_A)

    This is the r of the p = 1 extreme case (p' = L − l) combined with the factor p^(L−l); it equals
    :func:`trivial_sigma_eq11` at p = 1 only. Independent of σ_V.
    """
    _check(n, L, l, p)
    return _dominant_fraction(n, eps, L - l, p, sigma_a, c, paths=L - l)


def _dominant_fraction(n: int, eps: float, depth: int, p: float, sigma_a: float, c: float, paths: float) -> float:
    """p^depth / (1 + r^(−c)) with r = √(1 + ε² depth σ_A²) / √(ε² (n − 1) paths σ_A²): the shared form of eq. 11
    (``paths`` = p′) and of the "In conclusion" statement (``paths`` = L − l)."""
    r = math.sqrt(1 + eps**2 * depth * sigma_a**2) / math.sqrt(eps**2 * (n - 1) * paths * sigma_a**2)
    return p**depth / (1 + r ** (-c))
