"""VAN skip and update (document 002, eqs. 4-8) against hand-computed values in float64."""

import math

import pytest
import torch
from torch import nn

from gradlens.models.van import (
    VANSkip,
    VANUpdate,
    check_alpha_excluded,
    mean_alpha_residual,
    split_van_parameters,
)


class TinyVAN(nn.Module):
    """y = skip(x, W x): one VAN skip with α of shape [3] on x of shape [B, 3]."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 3, bias=False)
        self.skip = VANSkip((3,), source="")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x, self.fc(x))


def make_model(alpha: list[float]) -> TinyVAN:
    torch.manual_seed(0)
    model = TinyVAN().double()
    with torch.no_grad():
        model.skip.alpha.copy_(torch.tensor(alpha, dtype=torch.float64))
    return model


X = torch.tensor([[1.0, -2.0, 0.5], [0.3, 4.0, -1.0]], dtype=torch.float64)
C = torch.tensor([[2.0, 1.0, -3.0], [1.0, 0.5, 2.0]], dtype=torch.float64)


def loss_and_grad(model: TinyVAN) -> torch.Tensor:
    """Loss C = Σ c ⊙ y; by eq. 4, ∂C/∂α_i = −Σ_b c_bi x_bi (closed form, independent of α)."""
    (C * model(X)).sum().backward()
    return -(C * X).sum(dim=0)


def test_vanskip_forward_is_eq4() -> None:
    model = make_model([0.0, 0.25, 1.0])
    fx = model.fc(X)
    expected = fx + torch.tensor([1.0, 0.75, 0.0], dtype=torch.float64) * X
    torch.testing.assert_close(model(X), expected, rtol=0, atol=1e-15)


def test_alpha_init_is_zero_and_rejects_out_of_range() -> None:
    assert torch.equal(VANSkip((4, 1, 1)).alpha.detach(), torch.zeros(4, 1, 1))
    with pytest.raises(ValueError, match="alpha_init"):
        VANSkip((3,), alpha_init=1.5)


def test_update_matches_eqs_7_8_over_two_steps_with_clipping() -> None:
    # g = ∂C/∂α = [-2.3, 0, 3.5]: α_0 reaches 0.99 after one step and is clipped to 1 after the second.
    model = make_model([0.0, 0.5, 0.99])
    eta, ratio = 0.3, 0.5
    van = VANUpdate(model, lr=eta, lambda_lr_ratio=ratio)
    alpha = torch.tensor([0.0, 0.5, 0.99], dtype=torch.float64)
    lam = torch.full((3,), -1.0, dtype=torch.float64)
    for _ in range(2):
        van.zero_grad()
        g = loss_and_grad(model)
        torch.testing.assert_close(model.skip.alpha.grad, g)
        van.step()
        alpha = (alpha - eta * (g + lam)).clamp(0.0, 1.0)
        lam = lam + ratio * eta * (alpha - 1)
        torch.testing.assert_close(model.skip.alpha.detach(), alpha, rtol=0, atol=1e-15)
        torch.testing.assert_close(van.multipliers["skip"], lam, rtol=0, atol=1e-15)
    # α_0: 0 - 0.3·(-2.3 - 1) = 0.99, then clipped to 1 at the second step; multipliers only decrease.
    assert model.skip.alpha[0].item() == 1.0
    assert torch.all(van.multipliers["skip"] <= -1.0)


def test_clipping_at_zero() -> None:
    model = make_model([0.1, 0.1, 0.1])
    van = VANUpdate(model, lr=1.0, lambda_init=5.0)  # a large positive λ drives α below 0
    van.zero_grad()
    loss_and_grad(model)
    van.step()
    assert torch.all(model.skip.alpha.detach() >= 0.0)
    assert model.skip.alpha[1].item() == 0.0  # 0.1 - 1·(0 + 5) clipped


def test_lambda_zero_keeps_multipliers_at_zero() -> None:
    model = make_model([0.2, 0.5, 0.7])
    van = VANUpdate(model, lr=0.1, lambda_zero=True)
    alpha = torch.tensor([0.2, 0.5, 0.7], dtype=torch.float64)
    for _ in range(3):
        van.zero_grad()
        g = loss_and_grad(model)
        van.step()
        alpha = (alpha - 0.1 * g).clamp(0.0, 1.0)
    torch.testing.assert_close(model.skip.alpha.detach(), alpha, rtol=0, atol=1e-15)
    assert torch.equal(van.multipliers["skip"], torch.zeros(3, dtype=torch.float64))


def test_alpha_is_excluded_from_the_main_optimizer() -> None:
    model = make_model([0.0, 0.0, 0.0])
    weights, alphas = split_van_parameters(model)
    assert [id(p) for p in alphas] == [id(model.skip.alpha)]
    assert [id(p) for p in weights] == [id(model.fc.weight)]
    good = torch.optim.SGD(weights, lr=0.1, momentum=0.9)
    check_alpha_excluded(model, good)
    bad = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="skip.alpha"):
        VANUpdate(model, lr=0.1, optimizer=bad)
    # One training step: α changes only by eq. 7 (no momentum), W only by the main optimizer.
    van = VANUpdate(model, lr=0.1, optimizer=good)
    g = loss_and_grad(model)
    w_before = model.fc.weight.detach().clone()
    good.step()
    van.step()
    torch.testing.assert_close(model.skip.alpha.detach(), (0.1 * (1.0 - g)).clamp(0, 1), rtol=0, atol=1e-15)
    torch.testing.assert_close(model.fc.weight.detach(), w_before - 0.1 * model.fc.weight.grad)


def test_mean_alpha_residual_value() -> None:
    model = nn.Module()
    model.a = VANSkip((2,))
    model.b = VANSkip((3, 1, 1))
    with torch.no_grad():
        model.a.alpha.copy_(torch.tensor([0.0, 1.0]))
        model.b.alpha.fill_(0.5)
    # layer a: mean((1, 0)²) = 0.5; layer b: 0.25; mean over the two layers: 0.375.
    assert mean_alpha_residual(model).item() == pytest.approx(0.375, abs=1e-7)
    with pytest.raises(ValueError, match="no VANSkip"):
        mean_alpha_residual(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="no VANSkip"):
        VANUpdate(nn.Linear(2, 2), lr=0.1)


def test_state_dict_round_trip_and_dtype_follow() -> None:
    model = TinyVAN()
    van = VANUpdate(model, lr=0.1)
    model.double()  # λ follows α's dtype at the next step
    loss_and_grad(model)
    van.step()
    assert van.multipliers["skip"].dtype == torch.float64
    other = VANUpdate(model, lr=0.5)
    other.load_state_dict(van.state_dict())
    assert other.lr == 0.1
    torch.testing.assert_close(other.multipliers["skip"], van.multipliers["skip"])


# ---------------------------------------------------------------------------------------------------------
# phase-out speed (issue 14.3b): the adopted reading's α trajectory against its closed form


def test_phaseout_matches_the_closed_form_and_removes_the_skip_after_10_steps() -> None:
    """∂C/∂α = 0 (no backward): VANUpdate's α is 1 + R cos(θt − φ) until it reaches 1 at step T, then stays."""
    from gradlens.models.van import alpha_trajectory, phaseout_closed_form

    eta, ratio = 0.1, 0.1  # document 002, CIFAR: η = 0.1, η′ = η/10, λ_0 = −1, α_0 = 0
    radius, theta, phi, removal = phaseout_closed_form(eta, ratio)
    assert removal == 10
    assert theta == pytest.approx(math.acos(1 - 0.1 * 0.01 / 2), rel=1e-15)
    model = make_model([0.0, 0.0, 0.0])
    van = VANUpdate(model, lr=eta, lambda_lr_ratio=ratio)
    for t in range(1, 40):
        van.zero_grad()  # no loss gradient: α.grad is None, taken as 0
        van.step()
        expected = 1.0 if t >= removal else 1 + radius * math.cos(theta * t - phi)
        torch.testing.assert_close(model.skip.alpha.detach(), torch.full((3,), expected, dtype=torch.float64),
                                   rtol=0, atol=1e-12)
    # brute force of the same recursion in plain floats, and λ frozen once α = 1
    assert alpha_trajectory(39, eta, ratio)[removal - 1] == 1.0 > alpha_trajectory(39, eta, ratio)[removal - 2]
    lam_at_removal = -1 + ratio * eta * sum(a - 1 for a in alpha_trajectory(removal, eta, ratio))
    torch.testing.assert_close(van.multipliers["skip"], torch.full((3,), lam_at_removal, dtype=torch.float64))
    # the thin-MLP setting of section 4.1 (η = 0.001, η′ = η/2): 871 steps, under 2 epochs of 469 steps
    assert phaseout_closed_form(0.001, 0.5)[3] == 871 == 1 + next(
        t for t, a in enumerate(alpha_trajectory(2000, 0.001, 0.5)) if a == 1.0
    )


def test_other_readings_of_eq_7_do_not_slow_the_phaseout() -> None:
    """Double-counted λ and momentum remove the skip sooner; without the clip α never settles at 1."""
    from gradlens.models.van import alpha_trajectory

    def removal(alphas: list[float]) -> int:
        return 1 + next(t for t, a in enumerate(alphas) if a == 1.0)

    assert removal(alpha_trajectory(100, 0.1, 0.1)) == 10
    assert removal(alpha_trajectory(100, 0.1, 0.1, double_lambda=True)) == 5
    assert removal(alpha_trajectory(100, 0.1, 0.1, momentum=0.9)) == 5
    free = alpha_trajectory(1000, 0.1, 0.1, clip=False)
    crossings = [t + 1 for t in range(1, 1000) if (free[t - 1] - 1) * (free[t] - 1) <= 0]
    assert crossings[:4] == [10, 110, 209, 308]  # half-period π/θ ≈ 99.3 steps
    assert max((1 - a) ** 2 for a in free[500:]) > 10  # it swings far past 1 and back


def test_alpha_grad_scale_reads_the_loss_as_summed_over_the_batch() -> None:
    """Reading (a): eq. 7 with ∂C/∂α of the summed loss = B × that of the mean loss."""
    batch = 2  # X holds two samples
    model = make_model([0.5, 0.5, 0.5])
    van = VANUpdate(model, lr=0.01, lambda_lr_ratio=0.1, alpha_grad_scale=batch)
    g = loss_and_grad(model)  # gradient of the loss as written (a sum over the two samples)
    van.step()
    expected = (0.5 - 0.01 * (batch * g - 1.0)).clamp(0.0, 1.0)
    torch.testing.assert_close(model.skip.alpha.detach(), expected, rtol=0, atol=1e-15)
    assert van.state_dict()["alpha_grad_scale"] == 2.0
    with pytest.raises(ValueError, match="alpha_grad_scale must be > 0"):
        VANUpdate(model, lr=0.1, alpha_grad_scale=0)
