"""Layer and interlayer cushions against explicit operator matrices and full Jacobians (float64)."""

import math

import pytest
import torch
from torch import nn

from gradlens.metrics import (
    conv_operator_frobenius_norm,
    cushion_summary,
    interlayer_cushion,
    jacobian_frobenius_sq,
    jacobian_frobenius_sq_hutchinson,
    layer_cushion,
    layer_operator_frobenius_norm,
)

CONVS = [
    pytest.param(nn.Conv2d(3, 4, 3, stride=2, padding=1), (7, 6), id="strided-padded"),
    pytest.param(
        nn.Conv2d(4, 6, (3, 2), stride=(1, 2), padding=(2, 0), dilation=(2, 1), groups=2),
        (6, 5),
        id="grouped-dilated",
    ),
    pytest.param(nn.Conv2d(2, 3, 5, stride=3, padding=4), (4, 4), id="taps-outside"),
    pytest.param(nn.Conv2d(2, 2, 4, padding="same"), (5, 5), id="same-even-kernel"),
    pytest.param(nn.Conv2d(2, 3, 3, padding="valid"), (5, 4), id="valid"),
    pytest.param(nn.Conv1d(2, 3, 3, stride=2, padding=2), (7,), id="conv1d"),
]


def operator_matrix(layer: nn.Module, sample_shape: tuple[int, ...]) -> torch.Tensor:
    """The layer's linear operator (no bias) as an explicit [m, n] matrix, from the Jacobian of the map."""
    x = torch.zeros(1, *sample_shape, dtype=torch.float64)

    def linear_part(t: torch.Tensor) -> torch.Tensor:
        return layer(t) - layer(torch.zeros_like(t))

    jac = torch.autograd.functional.jacobian(linear_part, x)
    m = jac[0].numel() // x.numel()
    return jac.reshape(m, x.numel())


@pytest.mark.parametrize(("conv", "size"), CONVS)
def test_conv_frobenius_norm_matches_materialised_operator(conv: nn.Module, size: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    conv = conv.double()
    matrix = operator_matrix(conv, (conv.in_channels, *size))
    expected = matrix.norm()
    got = conv_operator_frobenius_norm(conv.weight, size, conv.stride, conv.padding, conv.dilation)
    assert torch.allclose(got, expected, rtol=1e-13, atol=0)
    from_module = layer_operator_frobenius_norm(conv, (conv.in_channels, *size))
    assert torch.allclose(from_module, expected, rtol=1e-13)
    # boundary-aware: with padding, not the kernel norm times √(output positions) (exact only for 'valid')
    naive = conv.weight.norm() * math.sqrt(matrix.shape[0] / conv.out_channels)
    assert torch.allclose(naive, expected, rtol=1e-3) == (conv.padding in ("valid", (0, 0)))


@pytest.mark.parametrize(("conv", "size"), CONVS)
def test_layer_cushion_plain_conv_matches_matrix(conv: nn.Module, size: tuple[int, ...]) -> None:
    torch.manual_seed(1)
    conv = conv.double()
    x = torch.relu(torch.randn(5, conv.in_channels, *size, dtype=torch.float64))
    matrix = operator_matrix(conv, tuple(x.shape[1:]))
    flat = x.flatten(1)
    expected = (flat @ matrix.T).norm(dim=1) / (matrix.norm() * flat.norm(dim=1))
    assert torch.allclose(layer_cushion(conv, x), expected, rtol=1e-12, atol=0)
    with torch.no_grad():
        out = conv(x)
    assert torch.allclose(layer_cushion(conv, x, out=out), expected, rtol=1e-12, atol=0)


def test_layer_cushion_residual_conv_matches_transferred_plain_layer() -> None:
    """Residual μ = ‖x + A x‖/(‖A‖_F‖x‖) equals the document's measurement on t = T(r) with ρ removed."""
    torch.manual_seed(2)
    conv = nn.Conv2d(3, 3, 3, padding=1).double()
    x = torch.relu(torch.randn(4, 3, 5, 5, dtype=torch.float64))
    matrix = operator_matrix(conv, (3, 5, 5))
    flat = x.flatten(1)
    expected = (flat + flat @ matrix.T).norm(dim=1) / (matrix.norm() * flat.norm(dim=1))
    got = layer_cushion(conv, x, residual=True)
    assert torch.allclose(got, expected, rtol=1e-12, atol=0)

    transferred = nn.Conv2d(3, 3, 3, padding=1).double()  # t = r + ρ: 1 added to the ID entries (c, c, 0, 0)
    with torch.no_grad():
        transferred.weight.copy_(conv.weight)
        transferred.bias.copy_(conv.bias)
        for c in range(3):
            transferred.weight[c, c, 1, 1] += 1
    t_matrix = operator_matrix(transferred, (3, 5, 5))
    numerator = (flat @ t_matrix.T).norm(dim=1)
    without_identity = (t_matrix - torch.eye(75, dtype=torch.float64)).norm()
    assert torch.allclose(got, numerator / (without_identity * flat.norm(dim=1)), rtol=1e-12, atol=0)
    assert (got > layer_cushion(conv, x)).all()


def test_layer_cushion_linear_plain_residual_and_rows() -> None:
    torch.manual_seed(3)
    fc = nn.Linear(6, 6).double()
    x = torch.relu(torch.randn(7, 6, dtype=torch.float64))
    w = fc.weight.detach()
    plain = (x @ w.T).norm(dim=1) / (w.norm() * x.norm(dim=1))
    residual = (x + x @ w.T).norm(dim=1) / (w.norm() * x.norm(dim=1))
    assert torch.allclose(layer_cushion(fc, x), plain, rtol=1e-13)
    assert torch.allclose(layer_cushion(fc, x, residual=True), residual, rtol=1e-13)
    x3 = torch.randn(2, 4, 6, dtype=torch.float64)  # Linear applied to 4 rows per sample
    matrix = operator_matrix(fc, (4, 6))
    flat = x3.flatten(1)
    expected = (flat @ matrix.T).norm(dim=1) / (matrix.norm() * flat.norm(dim=1))
    assert torch.allclose(layer_cushion(fc, x3), expected, rtol=1e-13)


def test_layer_cushion_nonfinite_and_bad_input() -> None:
    conv = nn.Conv2d(2, 4, 3, padding=1).double()
    x = torch.rand(3, 2, 4, 4, dtype=torch.float64)
    x[0, 0, 0, 0] = float("nan")
    x[1] = 0
    mu = layer_cushion(conv, x)
    assert torch.isnan(mu[:2]).all() and torch.isfinite(mu[2])
    with pytest.raises(ValueError, match="identity skip"):
        layer_cushion(conv, x, residual=True)
    with pytest.raises(ValueError, match=r"\(3, 3, 4, 4\)"):
        layer_cushion(conv, torch.rand(3, 3, 4, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="padding_mode"):
        layer_cushion(nn.Conv2d(2, 2, 3, padding=1, padding_mode="reflect").double(), x)
    with pytest.raises(ValueError, match="ConvTranspose2d"):
        layer_operator_frobenius_norm(nn.ConvTranspose2d(2, 2, 3), (2, 4, 4))


def test_cushion_summary_minimum_over_finite_samples() -> None:
    mu = torch.tensor([0.3, float("nan"), 0.1, 0.5], dtype=torch.float64)
    summary = cushion_summary(mu)
    assert summary["min"] == 0.1 and summary["nonfinite"] == 1
    assert torch.isclose(summary["mean"], torch.tensor(0.3, dtype=torch.float64))
    assert torch.isclose(summary["std"], torch.tensor(0.08 / 3, dtype=torch.float64).sqrt())
    assert torch.isnan(cushion_summary(torch.full((2,), float("nan")))["min"])


class Block(nn.Module):
    """conv-BN-ReLU-conv-BN (+ identity), ReLU: the ResNet basic block, tiny."""

    def __init__(self, channels: int, residual: bool, stride: int = 1) -> None:
        super().__init__()
        self.residual = residual
        self.conv1 = nn.Conv2d(channels, channels, 3, stride=stride, padding=1)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        return torch.relu(x + y if self.residual else y)


def make_block(residual: bool, stride: int = 1) -> nn.Module:
    torch.manual_seed(4)
    block = Block(2, residual, stride).double()
    for bn in (block.bn1, block.bn2):  # non-trivial eval-mode statistics
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        nn.init.uniform_(bn.weight, 0.5, 1.5)
        nn.init.uniform_(bn.bias, -0.2, 0.2)
    return block.eval()


def brute_force(f: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(μ, ‖J‖_F², sd of one Rademacher probe ‖J v‖²) per sample from the full per-sample Jacobian.

    For Rademacher v, Var(vᵀ M v) = 2(‖M‖_F² − Σ_k M_kk²) with M = JᵀJ.
    """
    mus, fros, sds = [], [], []
    for sample in x:
        jac = torch.autograd.functional.jacobian(lambda t: f(t[None])[0], sample)
        jac = jac.reshape(-1, sample.numel())
        jx = jac @ sample.flatten()
        gram = jac.T @ jac
        fros.append(jac.norm() ** 2)
        mus.append(math.sqrt(sample.numel()) * jx.norm() / (jac.norm() * sample.norm()))
        sds.append((2 * (gram.norm() ** 2 - gram.diagonal().pow(2).sum())).sqrt())
    return torch.stack(mus), torch.stack(fros), torch.stack(sds)


# stride 2: the output is smaller than the input, so the VJP (output) side is taken
@pytest.mark.parametrize(("residual", "stride"), [(False, 1), (True, 1), (False, 2)])
def test_interlayer_cushion_exact_matches_full_jacobian(residual: bool, stride: int) -> None:
    block = make_block(residual, stride)
    x = torch.relu(torch.randn(3, 2, 5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(5)))
    mu, fro_sq, _ = brute_force(block, x)
    result = interlayer_cushion(block, x, method="exact", chunk_size=7)
    assert result.method == "exact"
    assert torch.allclose(result.mu, mu, rtol=1e-11, atol=0)
    assert torch.allclose(result.jac_fro**2, fro_sq, rtol=1e-11, atol=0)
    assert torch.allclose(jacobian_frobenius_sq(block, x, chunk_size=50), fro_sq, rtol=1e-11, atol=0)
    assert (result.jac_fro_sq_se == 0).all()
    assert all(p.grad is None for p in block.parameters())


def test_residual_block_has_larger_interlayer_cushion() -> None:
    x = torch.relu(torch.randn(4, 2, 5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(6)))
    plain = interlayer_cushion(make_block(False), x).mu
    residual = interlayer_cushion(make_block(True), x).mu
    assert (residual > plain).all()


def test_hutchinson_unbiased_within_standard_error_and_se_shrinks() -> None:
    block = make_block(True)
    x = torch.relu(torch.randn(4, 2, 5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(7)))
    _, fro_sq, probe_sd = brute_force(block, x)
    rng_before = torch.random.get_rng_state()
    small, se_small = jacobian_frobenius_sq_hutchinson(block, x, num_probes=100, seed=1)
    large, se_large = jacobian_frobenius_sq_hutchinson(block, x, num_probes=400, seed=2, chunk_size=64)
    assert torch.equal(rng_before, torch.random.get_rng_state())  # no global RNG draws
    # unbiased: within 4 reported standard errors (a false alarm has probability ~6e-5 per sample)
    assert ((small - fro_sq).abs() < 4 * se_small).all()
    assert ((large - fro_sq).abs() < 4 * se_large).all()
    # the reported standard error is sd/√k with sd the exact probe sd (within the noise of estimating an sd
    # from k draws: 30% at k = 100, 15% at k = 400), so it shrinks like 1/√k
    assert ((se_small * 10 / probe_sd - 1).abs() < 0.3).all()
    assert ((se_large * 20 / probe_sd - 1).abs() < 0.15).all()
    again, _ = jacobian_frobenius_sq_hutchinson(block, x, num_probes=100, seed=1)
    assert torch.equal(small, again)
    result = interlayer_cushion(block, x, method="auto", exact_max=10, num_probes=100, seed=1)
    assert result.method == "hutchinson" and torch.equal(result.jac_fro, small.sqrt())
    assert torch.equal(result.jac_fro_sq_se, se_small)


def test_interlayer_cushion_rejects_train_mode_and_bad_method_and_flags_nan() -> None:
    block = make_block(True)
    x = torch.rand(2, 2, 4, 4, dtype=torch.float64)
    assert interlayer_cushion(block, x).method == "exact"  # auto: n = 32 <= AUTO_EXACT_MAX
    with pytest.raises(ValueError, match="bn1"):
        interlayer_cushion(block.train(), x)
    block.eval()
    with pytest.raises(ValueError, match="'fast'"):
        interlayer_cushion(block, x, method="fast")
    x[0, 0, 0, 0] = float("nan")
    mu = interlayer_cushion(block, x).mu
    assert torch.isnan(mu[0]) and torch.isfinite(mu[1])
