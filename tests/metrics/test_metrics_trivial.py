"""Trivial-case simulation (document 004, D.4.1) against a plain per-draw loop, and its analytical forms."""

import math

import numpy as np
import pytest
import torch

from gradlens.metrics import (
    p_prime,
    trivial_sigma,
    trivial_sigma_conclusion,
    trivial_sigma_draws,
    trivial_sigma_eq11,
)
from gradlens.metrics.trivial import CHUNK_DRAWS


def loop_sigma(a: np.ndarray, s: np.ndarray, v: np.ndarray, eps: float, residual: bool) -> np.ndarray:
    """σ per draw: Θ = [Π_m (K^(m))ᵀ S^(m)] V with explicit matrices, then r_i > 1 by explicit sums."""
    draws, depth, n, _ = a.shape
    out = np.zeros(draws)
    for d in range(draws):
        theta = np.eye(n)
        for m in range(depth):
            kernel = np.eye(n) + eps * a[d, m] if residual else a[d, m]
            theta = theta @ kernel.T @ np.diag(s[d, m])
        theta = theta @ np.diag(v[d])
        dominant = 0
        for i in range(n):
            rest = sum(theta[i, j] for j in range(n) if j != i)
            dominant += abs(theta[i, i]) > abs(rest)
        out[d] = dominant / n
    return out


@pytest.mark.parametrize("residual", [True, False])
@pytest.mark.parametrize("p", [0.3, 0.9, 1.0])
def test_vectorised_draws_match_plain_loop(residual: bool, p: float) -> None:
    generator = torch.Generator().manual_seed(0)
    draws, depth, n = 300, 4, 6
    a = 0.5 * torch.randn(draws, depth, n, n, generator=generator, dtype=torch.float64)
    s = (torch.rand(draws, depth, n, generator=generator, dtype=torch.float64) < p).double()
    v = torch.randn(draws, n, generator=generator, dtype=torch.float64)
    got = trivial_sigma_draws(a, s, v, eps=0.3, residual=residual).numpy()
    assert np.array_equal(got, loop_sigma(a.numpy(), s.numpy(), v.numpy(), 0.3, residual))


def test_trivial_sigma_uses_documented_draws_and_standard_error() -> None:
    draws, n, L, l, p = CHUNK_DRAWS + 500, 5, 6, 3, 0.8
    generator = torch.Generator().manual_seed(3)
    sigmas = []
    for start in range(0, draws, CHUNK_DRAWS):
        count = min(draws, start + CHUNK_DRAWS) - start
        a = 0.02 * torch.randn(count, L - l, n, n, generator=generator, dtype=torch.float64)
        s = (torch.rand(count, L - l, n, generator=generator, dtype=torch.float64) < p).double()
        v = 0.1 * torch.randn(count, n, generator=generator, dtype=torch.float64)
        sigmas.append(trivial_sigma_draws(a, s, v, 0.2, True))
    sigma = torch.cat(sigmas)
    mean, se = trivial_sigma(n=n, eps=0.2, L=L, l=l, p=p, sigma_a=0.02, draws=draws, seed=3)
    assert math.isclose(mean, sigma.mean().item(), rel_tol=1e-12)
    assert math.isclose(se, sigma.std().item() / math.sqrt(draws), rel_tol=1e-9)
    # the ratio is scale-free in V, so σ_V changes nothing (the document's Figure 11d, red line flat)
    assert trivial_sigma(n=n, L=L, l=l, sigma_v=7.0, draws=2000, seed=1) == trivial_sigma(
        n=n, L=L, l=l, sigma_v=0.01, draws=2000, seed=1
    )


def test_analytical_forms() -> None:
    for p in (0.3, 0.9):
        assert math.isclose(p_prime(p, 5), p**2 * (1 - p**10) / (1 - p**2), rel_tol=1e-14)
    assert p_prime(1.0, 5) == 5
    # at p = 1 the two forms coincide (p' = L − l); below it eq. 11 uses p' < L − l, so a larger r
    assert math.isclose(trivial_sigma_eq11(p=1.0), trivial_sigma_conclusion(p=1.0), rel_tol=1e-14)
    assert trivial_sigma_eq11(p=0.9) > trivial_sigma_conclusion(p=0.9)
    r = math.sqrt(1 + 5 * 0.1**2 * 0.01**2) / (0.1 * math.sqrt(5 * 19) * 0.01)
    assert math.isclose(trivial_sigma_conclusion(), 0.9**5 / (1 + r**-1.2), rel_tol=1e-14)
    r11 = math.sqrt(1 / (0.1**2 * 19 * p_prime(0.9, 5) * 0.01**2) + 5 / (19 * p_prime(0.9, 5)))
    assert math.isclose(trivial_sigma_eq11(), 0.9**5 / (1 + r11**-1.2), rel_tol=1e-14)
    assert trivial_sigma_eq11(p=0.0) == 0 and trivial_sigma_conclusion(p=0.0) == 0
    with pytest.raises(ValueError, match="l=10"):
        trivial_sigma_eq11(l=10)
