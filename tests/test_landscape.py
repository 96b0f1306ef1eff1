"""Loss landscapes (gradlens.landscape) against brute-force evaluation on tiny float64 models."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from gradlens.landscape import filter_normalized_direction, loss_landscape, random_directions


def _data(n: int = 24, features: int = 5, classes: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return torch.randn(n, features, generator=generator, dtype=torch.float64), torch.randint(
        classes, (n,), generator=generator
    )


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 3)).double()


def test_centre_equals_loss_at_the_trained_weights():
    model = _mlp()
    x, y = _data()
    model.eval()
    with torch.no_grad():
        expected = float(nn.functional.cross_entropy(model(x), y))
    model.train()
    land = loss_landscape(model, x, y, resolution=5, batch_size=7)
    assert land.alphas[2] == 0 and land.betas[2] == 0
    assert land.loss[2, 2] == pytest.approx(expected, rel=1e-12)
    assert land.center_loss == pytest.approx(expected, rel=1e-12)
    assert land.samples == 24


def test_directions_are_filter_normalised():
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.Flatten(), nn.Linear(12, 4)).double()
    direction = filter_normalized_direction(model, torch.Generator().manual_seed(3))
    for name, param in model.named_parameters():
        if param.dim() <= 1:
            assert torch.equal(direction[name], torch.zeros_like(param))
            continue
        per_filter = direction[name].reshape(param.shape[0], -1).norm(dim=1)
        expected = param.detach().reshape(param.shape[0], -1).norm(dim=1)
        torch.testing.assert_close(per_filter, expected, rtol=1e-12, atol=0)
    with_1d = filter_normalized_direction(model, torch.Generator().manual_seed(3), include_1d=True)
    assert torch.equal(with_1d["0.bias"], model[0].bias.detach())


def test_linear_model_matches_closed_form():
    """Linear model, MSE: L(α, β) = mean ‖(W + αD + βE) x − t‖² exactly, on every grid point."""
    torch.manual_seed(0)
    model = nn.Linear(5, 3, bias=False).double()
    x, _ = _data()
    target = torch.randn(24, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    d = {"weight": torch.randn(3, 5, dtype=torch.float64)}
    e = {"weight": torch.randn(3, 5, dtype=torch.float64)}

    def mse(out, t, reduction="sum"):  # loss_landscape asks for the sum over the batch
        return ((out - t) ** 2).sum()

    land = loss_landscape(model, x, target, resolution=4, span=0.5, batch_size=5, directions=(d, e), loss_fn=mse)
    w = model.weight.detach()
    for i, a in enumerate(land.alphas):
        for j, b in enumerate(land.betas):
            out = x @ (w + a * d["weight"] + b * e["weight"]).T
            assert land.loss[i, j] == pytest.approx(float(((out - target) ** 2).sum(1).mean()), rel=1e-12)
    np.testing.assert_allclose(land.alphas, [-0.5, -1 / 6, 1 / 6, 0.5])


def test_cross_entropy_grid_matches_brute_force_and_batch_budget():
    model = _mlp()
    x, y = _data()
    directions = random_directions(model, seed=4)
    land = loss_landscape(model, x, y, resolution=3, span=0.3, batch_size=8, max_batches=2, seed=4)
    reference = _mlp()
    reference.eval()
    for i, a in enumerate(land.alphas):
        for j, b in enumerate(land.betas):
            with torch.no_grad():
                for name, p in reference.named_parameters():
                    p.copy_(dict(model.named_parameters())[name] + a * directions[0][name] + b * directions[1][name])
                out = reference(x[:16])
            assert land.loss[i, j] == pytest.approx(float(nn.functional.cross_entropy(out, y[:16])), rel=1e-10)
            assert land.accuracy[i, j] == pytest.approx(float((out.argmax(1) == y[:16]).double().mean()))
    assert land.samples == 16


def test_side_effect_free():
    model = _mlp()
    x, y = _data()
    model.train()
    model(x).sum().backward()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    rng = torch.get_rng_state()
    loss_landscape(model, x, y, resolution=3)
    assert torch.equal(torch.get_rng_state(), rng)
    assert model.training and model[1].training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    for n, p in model.named_parameters():
        assert torch.equal(p.grad, grads[n])


@pytest.mark.parametrize(
    "kwargs",
    [{"resolution": 1}, {"span": 0.0}, {"batch_size": 0}, {"max_batches": 0}],
)
def test_bad_arguments(kwargs):
    model = _mlp()
    x, y = _data()
    with pytest.raises(ValueError):
        loss_landscape(model, x, y, **kwargs)


def test_directions_must_match_parameters():
    model = _mlp()
    x, y = _data()
    first, second = random_directions(model)
    del second["0.weight"]
    with pytest.raises(KeyError, match="0.weight"):
        loss_landscape(model, x, y, directions=(first, second))
