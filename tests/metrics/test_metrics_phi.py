"""φ(r): closed form against the document's integral (quad) and Monte Carlo; the approximation and best c."""

import numpy as np
import pytest
import torch

from gradlens.metrics import phi, phi_approx, phi_approx_best_c, phi_integral

GRID = np.array([0.0, 1e-3, 0.05, 0.3, 0.7, 1.0, 1.5, 4.0, 30.0, 1e3, np.inf])


def test_closed_form_matches_document_integral() -> None:
    assert np.allclose(phi(GRID), phi_integral(GRID), rtol=0, atol=1e-10)
    assert phi(1.0) == 0.5 and phi(0.0) == 0 and phi(np.inf) == 1
    finite = GRID[1:-1]
    assert np.allclose(phi(1 / finite), 1 - phi(finite), atol=1e-15)
    assert phi_integral(GRID.reshape(11, 1)).shape == (11, 1)


@pytest.mark.parametrize("r", [0.2, 1.0, 3.0])
def test_closed_form_matches_monte_carlo(r: float) -> None:
    rng = np.random.default_rng(42)
    draws = 200_000
    x = rng.normal(0, 2.0 * r, draws)  # σ_X = 2r, σ_Y = 2
    y = rng.normal(0, 2.0, draws)
    frequency = np.mean(np.abs(x) > np.abs(y))
    se = np.sqrt(phi(r) * (1 - phi(r)) / draws)
    assert abs(frequency - phi(r)) < 4 * se  # 4 standard errors: false alarm probability ~6e-5


def test_tensor_inputs_and_bad_values() -> None:
    r = torch.tensor([0.0, 1.0, 3.0], dtype=torch.float64)
    assert torch.allclose(phi(r), torch.from_numpy(phi(r.numpy())))
    assert torch.allclose(phi_approx(r), torch.from_numpy(phi_approx(r.numpy())))
    with pytest.raises(ValueError, match="-1"):
        phi(-1.0)
    with pytest.raises(ValueError, match=">= 0"):
        phi_integral([0.5, -2.0])
    assert np.isnan(phi_integral(np.nan))


def test_approximation_formula_and_best_c() -> None:
    r = np.array([0.0, 0.5, 1.0, 2.0])
    assert np.allclose(phi_approx(r), [0.0, 1 / (1 + 2**1.2), 0.5, 1 / (1 + 2**-1.2)])
    assert np.allclose(phi_approx(r, c=2.0), r**2 / (1 + r**2))
    c, error = phi_approx_best_c()
    grid = np.logspace(-4, 4, 4001)
    assert np.isclose(error, np.max(np.abs(phi(grid) - phi_approx(grid, c))))
    scan = [np.max(np.abs(phi(grid) - phi_approx(grid, cc))) for cc in np.linspace(0.8, 1.8, 1001)]
    assert error <= min(scan) + 1e-12  # the minimax c beats a brute-force scan
    assert error < np.max(np.abs(phi(grid) - phi_approx(grid, 1.2)))  # and the document's c = 1.2
    assert 1.15 < c < 1.3 and error < 0.01
