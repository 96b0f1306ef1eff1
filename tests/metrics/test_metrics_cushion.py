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
    with pytest.raises(ValueError, match="groups=2"):  # a shape-changing grouped conv has no ID entries
        layer_cushion(nn.Conv2d(2, 4, 3, stride=2, padding=1, groups=2).double(), x, residual=True)
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


def test_layer_cushion_channel_doubling_residual_layer_matches_explicit_matrix() -> None:
    """The group-opening layer C → 2C, stride 2 of a simplified ResNet: μ = ‖x̃ + A x‖ / (‖A‖_F ‖x‖) with x̃
    the option-A shortcut, i.e. the document's measurement on t = T(r) (eq. 1) with 1 removed from its ID
    entries."""
    from gradlens.models.resnet_v1 import ZeroPadShortcut
    from gradlens.models.transforms import id_entries

    torch.manual_seed(8)
    conv = nn.Conv2d(2, 4, 3, stride=2, padding=1).double()
    shortcut = ZeroPadShortcut(2, 4, 2)
    x = torch.relu(torch.randn(3, 2, 5, 5, dtype=torch.float64))
    block_map = operator_matrix(lambda t: shortcut(t) + conv(t), (2, 5, 5))  # x ↦ x̃ + A x, [4·3·3, 2·5·5]
    a_matrix = operator_matrix(conv, (2, 5, 5))
    flat = x.flatten(1)
    expected = (flat @ block_map.T).norm(dim=1) / (a_matrix.norm() * flat.norm(dim=1))
    got = layer_cushion(conv, x, residual=True)
    assert torch.allclose(got, expected, rtol=1e-12, atol=0)
    assert torch.allclose(layer_cushion(conv, x, residual=True, out=conv(x).detach()), expected, rtol=1e-12)
    transferred = nn.Conv2d(2, 4, 3, stride=2, padding=1).double()  # t = T(r) = r + ρ
    with torch.no_grad():
        transferred.weight.copy_(conv.weight + id_entries(conv.weight))
        transferred.bias.copy_(conv.bias)
    t_matrix = operator_matrix(transferred, (2, 5, 5))
    assert torch.allclose(t_matrix, block_map, rtol=0, atol=1e-14)  # T is exact on this layer
    id_matrix = operator_matrix(lambda t: shortcut(t), (2, 5, 5))
    assert torch.allclose((t_matrix - id_matrix).norm(), a_matrix.norm(), rtol=1e-13)


@pytest.mark.parametrize(("fan_in", "fan_out"), [(6, 8), (8, 6)])
def test_layer_cushion_residual_linear_that_changes_width(fan_in: int, fan_out: int) -> None:
    torch.manual_seed(9)
    fc = nn.Linear(fan_in, fan_out).double()
    x = torch.randn(4, 3, fan_in, dtype=torch.float64)  # [B, T, H]: the ID entries act on the last dim
    eye = torch.eye(fan_out, fan_in, dtype=torch.float64)  # (c, c) for c < min(C, D)
    w = fc.weight.detach()
    expected = (x @ (eye + w).T).flatten(1).norm(dim=1) / (w.norm() * 3**0.5 * x.flatten(1).norm(dim=1))
    assert torch.allclose(layer_cushion(fc, x, residual=True), expected, rtol=1e-13)


class BNBlock(nn.Module):
    """conv-BN-ReLU-conv-BN (+ identity), ReLU with bias-free convolutions, as in ResNet-v1."""

    def __init__(self, channels: int, residual: bool, eps: float) -> None:
        super().__init__()
        self.residual = residual
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels, eps=eps)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        return torch.relu(x + y if self.residual else y)


def bn_block(residual: bool, eps: float = 1e-5) -> nn.Module:
    torch.manual_seed(10)
    block = BNBlock(3, residual, eps).double()
    for bn in (block.bn1, block.bn2):
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        nn.init.uniform_(bn.weight, 0.5, 1.5)
        nn.init.uniform_(bn.bias, -0.2, 0.2)
    return block.eval()


def bn_input(batch: int = 4) -> torch.Tensor:
    return torch.relu(torch.randn(batch, 3, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(11)))


def brute_force_batch(block: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(μ, ‖J_b‖_F², ‖(J X)_b‖) of the batch reading from the full Jacobian of the batch map (train-mode BN)."""
    batch, n = x.shape[0], x[0].numel()
    state = {k: v.clone() for k, v in block.state_dict().items()}
    block.train()
    full = torch.autograd.functional.jacobian(block, x).reshape(batch, -1, batch * n)  # [b, m, (c, k)]
    block.load_state_dict(state)
    block.eval()
    jx = full @ x.flatten()  # (J X)_b
    fro_sq = full.pow(2).sum(dim=(1, 2))  # row block of sample b
    return n**0.5 * jx.norm(dim=1) / (fro_sq.sqrt() * x.flatten(1).norm(dim=1)), fro_sq, jx.norm(dim=1)


def brute_force_sample(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """μ of the sample reading: train-mode BN on each sample alone, full per-sample Jacobian."""
    state = {k: v.clone() for k, v in block.state_dict().items()}
    block.train()
    mu, _, _ = brute_force(block, x)
    block.load_state_dict(state)
    block.eval()
    return mu


@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("method", ["exact", "hutchinson"])
def test_bn_statistics_readings_match_full_jacobian(residual: bool, method: str) -> None:
    block, x = bn_block(residual), bn_input()
    buffers = {k: v.clone() for k, v in block.named_buffers()}
    batch_mu, batch_fro, batch_jx = brute_force_batch(block, x)
    sample_mu = brute_force_sample(block, x)
    kw = {"method": method, "num_probes": 64, "seed": 3, "chunk_size": 64}
    got_batch = interlayer_cushion(block, x, bn_statistics="batch", **kw)
    got_sample = interlayer_cushion(block, x, bn_statistics="sample", **kw)
    if method == "exact":
        assert torch.allclose(got_batch.mu, batch_mu, rtol=1e-10, atol=1e-14)
        assert torch.allclose(got_batch.jac_fro**2, batch_fro, rtol=1e-11)
        assert torch.allclose(got_sample.mu, sample_mu, rtol=1e-10, atol=1e-14)
    else:  # J x exact, ‖J‖_F² unbiased: within 4 reported standard errors
        assert got_batch.method == "hutchinson"
        assert torch.allclose(got_batch.jx_norm, batch_jx, rtol=1e-10, atol=1e-16)
        assert ((got_batch.jac_fro**2 - batch_fro).abs() < 4 * got_batch.jac_fro_sq_se).all()
    for name, value in block.named_buffers():  # running statistics neither read nor updated
        assert torch.equal(value, buffers[name]), name
    assert not block.training and all(bn.track_running_stats for bn in (block.bn1, block.bn2))
    if residual:
        assert (got_batch.mu > 0.1).all() and (got_sample.mu > 0.1).all()
    else:  # scale-invariant up to BN's ε: J x = 0 up to ε
        assert (got_batch.mu < 1e-3).all() and (got_sample.mu < 1e-3).all()


def test_plain_block_cushion_scales_with_bn_eps_from_input_statistics() -> None:
    """Issue 14.2: with BN normalising by its input, μ_plain ∝ ε exactly (running statistics: O(1))."""
    x = bn_input(8)
    by_eps = {}
    for eps in (1e-3, 1e-5, 1e-7):
        block = bn_block(False, eps)
        by_eps[eps] = {s: interlayer_cushion(block, x, "exact", bn_statistics=s).mu.mean().item()
                       for s in ("batch", "sample", "running")}
    for reading in ("batch", "sample"):
        assert by_eps[1e-5][reading] / by_eps[1e-7][reading] == pytest.approx(100, rel=1e-3)
        assert by_eps[1e-3][reading] / by_eps[1e-5][reading] == pytest.approx(100, rel=0.1)
        assert 1e-6 < by_eps[1e-5][reading] < 1e-4
    assert all(0.3 < by_eps[eps]["running"] < 3 for eps in by_eps)


class NoForwardAD(torch.autograd.Function):
    """x ↦ tanh(x) with a backward but no jvp: forward-mode AD raises."""

    @staticmethod
    def forward(ctx, x):
        y = torch.tanh(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        return grad * (1 - y**2)


@pytest.mark.parametrize("bn_statistics", ["running", "batch"])
def test_reverse_route_equals_forward_route_and_is_taken_automatically(bn_statistics: str) -> None:
    block = bn_block(True)
    x = bn_input()
    forward = interlayer_cushion(block, x, "exact", autodiff="forward", bn_statistics=bn_statistics, chunk_size=9)
    reverse = interlayer_cushion(block, x, "exact", autodiff="reverse", bn_statistics=bn_statistics, chunk_size=9)
    assert (forward.autodiff, reverse.autodiff) == ("forward", "reverse")
    assert torch.allclose(forward.mu, reverse.mu, rtol=1e-11)
    assert torch.allclose(forward.jac_fro, reverse.jac_fro, rtol=1e-11)

    def segment(t: torch.Tensor) -> torch.Tensor:
        return NoForwardAD.apply(block(t))

    mu, fro_sq, _ = brute_force(segment, x)
    with pytest.raises((NotImplementedError, RuntimeError)):
        interlayer_cushion(segment, x, autodiff="forward")
    got = interlayer_cushion(segment, x)  # auto: forward mode is missing, the reverse route is taken
    assert got.autodiff == "reverse" and got.method == "exact"
    assert torch.allclose(got.mu, mu, rtol=1e-11)
    assert torch.allclose(jacobian_frobenius_sq(segment, x), fro_sq, rtol=1e-11)
