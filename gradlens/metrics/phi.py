"""φ(r) = P[|X| > |Y|] for independent zero-mean Gaussians (document 004, appendix E, eqs. 14 and 15).

X ~ N(0, σ_X), Y ~ N(0, σ_Y) with σ the standard deviation (the document's notation), r = σ_X / σ_Y ≥ 0.
Every function is vectorised over ``r`` (a float, a numpy array or, for :func:`phi` and
:func:`phi_approx`, a torch tensor) and returns the same kind and shape.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from numpy.typing import ArrayLike
from scipy import integrate, optimize, special
from torch import Tensor


def _as_array(r: ArrayLike) -> np.ndarray:
    values = np.asarray(r, dtype=np.float64)
    if np.any(values < 0):
        raise ValueError(f"r = σ_X/σ_Y must be >= 0, got min {np.nanmin(values)}")
    return values


def phi(r: ArrayLike | Tensor) -> np.ndarray | Tensor:
    """Closed form φ(r) = P[|X| > |Y|] = (2/π) · arctan(r).

    Proof. Write X = σ_X Z_1, Y = σ_Y Z_2 with Z_1, Z_2 independent standard normals. The pair (Z_1, Z_2)
    is rotation invariant, so in polar form Z_1 = ρ cos θ, Z_2 = ρ sin θ the angle θ is uniform on [0, 2π)
    and independent of ρ. |X| > |Y| ⇔ σ_X |cos θ| > σ_Y |sin θ| ⇔ |tan θ| < r (θ = ±π/2 excluded, a null
    set). On [0, 2π) the set {|tan θ| < r} consists of the four arcs |θ − kπ| < arctan r around k = 0, 1, 2
    (the one around 2π wrapping to 0), of total length 4 · arctan r, hence P = 4 arctan(r) / (2π) =
    (2/π) arctan(r). ∎  Checks: φ(0) = 0, φ(1) = 1/2, φ(∞) = 1, φ(1/r) = 1 − φ(r).

    Args:
        r: σ_X/σ_Y ≥ 0 (``inf`` allowed), float, array or tensor.

    Returns:
        φ(r), same kind and shape as ``r``.
    """
    if isinstance(r, Tensor):
        if bool((r < 0).any()):
            raise ValueError(f"r = σ_X/σ_Y must be >= 0, got min {r.min().item()}")
        return torch.atan(r) * (2 / math.pi)
    return 2 / np.pi * np.arctan(_as_array(r))


def _integral(r: float) -> float:
    if np.isnan(r):
        return float("nan")
    if r == 0:
        return 0.0
    if np.isinf(r):
        return 1.0

    def integrand(u: float) -> float:
        # g_r(u) G(u): g_r the N(0, r) density (the document prints its normaliser as 1/√(2πσ); the density
        # is 1/(√(2π) σ)), G the standard normal CDF.
        return math.exp(-0.5 * (u / r) ** 2) / (math.sqrt(2 * math.pi) * r) * special.ndtr(u)

    value, _ = integrate.quad(integrand, 0.0, math.inf, epsabs=1e-13, epsrel=1e-12)
    return 4 * value - 1


def phi_integral(r: ArrayLike) -> np.ndarray:
    """φ(r) by numerical integration exactly as document 004 writes it (appendix E, after eq. 14)::

        φ(r) = 4 ∫_0^∞ g_r(u) G(u) du − 1,   g_r(u) = exp(−u²/(2r²)) / (√(2π) r),   G = Φ

    G the standard normal CDF, with ``scipy.integrate.quad`` on [0, ∞) per element (limits: φ(0) = 0,
    φ(∞) = 1).

    Args:
        r: σ_X/σ_Y ≥ 0, float or array.

    Returns:
        float64 array of the shape of ``r``.
    """
    values = _as_array(r)
    return np.vectorize(_integral, otypes=[np.float64])(values)


def phi_approx(r: ArrayLike | Tensor, c: float = 1.2) -> np.ndarray | Tensor:
    """The document's approximation φ(r) ≈ 1 / (1 + r^(−c)) (appendix E, eq. 15; c = 1.2 there).

    Args:
        r: σ_X/σ_Y ≥ 0, float, array or tensor (r = 0 gives 0).
        c: exponent.

    Returns:
        1 / (1 + r^(−c)), same kind and shape as ``r``.
    """
    if isinstance(r, Tensor):
        if bool((r < 0).any()):
            raise ValueError(f"r = σ_X/σ_Y must be >= 0, got min {r.min().item()}")
        return 1 / (1 + r.pow(-c))
    values = _as_array(r)
    with np.errstate(divide="ignore"):
        return 1 / (1 + values ** (-c))


def phi_approx_best_c(r_min: float = 1e-4, r_max: float = 1e4, points: int = 4001) -> tuple[float, float]:
    """The c minimising the maximum error max_r |φ(r) − 1/(1 + r^(−c))| over a log-spaced grid of r.

    Both functions satisfy f(1/r) = 1 − f(r) and agree at 0, 1 and ∞, so the grid [r_min, r_max] with
    r_min = 1/r_max covers the error curve. φ is the closed form :func:`phi`.

    Args:
        r_min, r_max: grid range (> 0).
        points: grid size.

    Returns:
        (c, max error at that c).
    """
    if not 0 < r_min < r_max:
        raise ValueError(f"need 0 < r_min < r_max, got r_min={r_min}, r_max={r_max}")
    grid = np.logspace(np.log10(r_min), np.log10(r_max), points)
    exact = phi(grid)

    def max_error(c: float) -> float:
        return float(np.max(np.abs(exact - phi_approx(grid, c))))

    best = optimize.minimize_scalar(max_error, bounds=(0.5, 2.5), method="bounded", options={"xatol": 1e-10})
    return float(best.x), float(best.fun)
