"""Dominant gradient flow σ against explicit loops over i, j, p on full Jacobians (float64)."""

import numpy as np
import pytest
import torch
from torch import nn

from gradlens.metrics import dominant_flow, final_grad_histogram, ratio_terms, sigma_from_ratios


class TinyConvNet(nn.Module):
    """Stem conv, three conv+ReLU layers (2 -> 4 channels, one strided), global average pool, FC head."""

    def __init__(self, residual: bool) -> None:
        super().__init__()
        self.residual = residual
        self.stem = nn.Conv2d(1, 2, 3, padding=1)
        self.convs = nn.ModuleList(
            [
                nn.Conv2d(2, 2, 3, padding=1),
                nn.Conv2d(2, 4, 3, stride=2, padding=1),
                nn.Conv2d(4, 4, 3, padding=1),
            ]
        )
        self.head = nn.Linear(4, 3)

    def block(self, k: int, a: torch.Tensor) -> torch.Tensor:
        y = self.convs[k](a)
        return torch.relu(a + y if self.residual and y.shape == a.shape else y)

    def rest(self, k: int, a: torch.Tensor, pooled: bool = True) -> torch.Tensor:
        """a^(L) from the activation after block k − 1 (k = 0: after the stem)."""
        for j in range(k, len(self.convs)):
            a = self.block(j, a)
        return a.mean(dim=(2, 3)) if pooled else a

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        acts = [torch.relu(self.stem(x))]
        for k in range(len(self.convs)):
            acts.append(self.block(k, acts[-1]))
        final = acts[-1].mean(dim=(2, 3))  # a^(L): [B, 4]
        return acts, final, self.head(final)


def reference(net: TinyConvNet, acts: list[torch.Tensor], grad: torch.Tensor) -> list[torch.Tensor]:
    """r^(ℓ) per sample by explicit loops over i, j, p on the full Jacobian ∂a^(L)/∂a^(ℓ)."""
    rs = []
    for k, act in enumerate(acts[:-1]):
        r = torch.zeros(act.shape[0], act.shape[1], dtype=torch.float64)
        for b in range(act.shape[0]):
            jac = torch.autograd.functional.jacobian(lambda a, k=k: net.rest(k, a), act[b : b + 1].detach())
            jac = jac.reshape(grad.shape[1], act.shape[1], -1)  # [j, i, p]
            channels, positions = act.shape[1], jac.shape[2]
            for i in range(channels):
                total = 0.0
                for p in range(positions):
                    diagonal = (jac[i, i, p] * grad[b, i]).item()
                    rest = sum((jac[j, i, p] * grad[b, j]).item() for j in range(grad.shape[1]) if j != i)
                    if diagonal == 0 and rest == 0:
                        term = 0.0
                    elif rest == 0:
                        term = float("inf")
                    else:
                        term = abs(diagonal) / abs(rest)
                    total += term
                r[b, i] = total / positions
        rs.append(r)
    return rs


def run(residual: bool, seed: int = 0) -> tuple[TinyConvNet, list[torch.Tensor], torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    net = TinyConvNet(residual).double()
    x = torch.randn(3, 1, 6, 6, dtype=torch.float64)
    acts, final, logits = net(x)
    loss = nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2]))
    return net, acts, final, loss


@pytest.mark.parametrize("residual", [False, True])
def test_dominant_flow_matches_triple_loop(residual: bool) -> None:
    net, acts, final, loss = run(residual)
    (grad,) = torch.autograd.grad(loss, final, retain_graph=True)
    expected = reference(net, acts, grad.detach())
    result = dominant_flow(final, acts[:-1], grad)
    for got, want in zip(result.r, expected, strict=True):
        assert torch.allclose(got, want, rtol=1e-10, atol=1e-300)
    per_sample = torch.stack([(r > 1).double().mean(dim=1) for r in expected], dim=1)
    assert torch.equal(result.sigma_per_sample, per_sample)
    assert torch.allclose(result.sigma, per_sample.mean(dim=0))
    # the same from the loss, chunked, and from the feature map before the pool
    from_loss = dominant_flow(final, acts[:-1], loss=loss, chunk_size=3)
    feature_map = acts[-1]
    (map_grad,) = torch.autograd.grad(loss, feature_map, retain_graph=True)
    from_map = dominant_flow(feature_map, acts[:-1], map_grad, chunk_size=1)
    for r, r_loss, r_map in zip(result.r, from_loss.r, from_map.r, strict=True):
        assert torch.allclose(r_loss, r, rtol=1e-12)
        assert torch.allclose(r_map, r, rtol=1e-9)
    assert all(p.grad is None for p in net.parameters())


def test_dominant_flow_mlp_zero_over_zero_and_pure_path() -> None:
    """P = 1; a unit that reaches nothing downstream gives 0/0 → r = 0; a^(L) itself gives r = inf."""
    torch.manual_seed(1)
    fc1, fc2, head = nn.Linear(3, 4).double(), nn.Linear(4, 4).double(), nn.Linear(4, 2).double()
    with torch.no_grad():
        fc2.weight[:, 1] = 0  # unit 1 of a^(1) feeds nothing
    x = torch.randn(5, 3, dtype=torch.float64)
    a1 = torch.relu(fc1(x))
    final = torch.relu(fc2(a1))
    loss = nn.functional.cross_entropy(head(final), torch.tensor([0, 1, 0, 1, 0]))
    (grad,) = torch.autograd.grad(loss, final, retain_graph=True)
    result = dominant_flow(final, [a1, final], grad)
    assert (result.r[0][:, 1] == 0).all()
    jac = torch.stack(
        [torch.autograd.functional.jacobian(lambda a: torch.relu(fc2(a)), a1[b].detach()) for b in range(5)]
    )  # [b, j, i]
    theta = jac.transpose(1, 2) * grad[:, None, :]  # Θ_ij per sample
    diagonal = theta.diagonal(dim1=1, dim2=2)
    expected = ratio_terms(diagonal, theta.sum(dim=2) - diagonal)
    assert torch.allclose(result.r[0], expected, rtol=1e-10)
    nonzero = grad != 0
    assert torch.equal(torch.isinf(result.r[1]), nonzero) and (result.r[1][~nonzero] == 0).all()


def test_ratio_conventions_and_nan() -> None:
    diagonal = torch.tensor([0.0, 1.0, -2.0, float("nan")])
    off = torch.tensor([0.0, 0.0, 1.0, 1.0])
    terms = ratio_terms(diagonal, off)
    assert terms[0] == 0 and terms[1] == float("inf") and terms[2] == 2 and torch.isnan(terms[3])
    sigma = sigma_from_ratios(torch.tensor([[2.0, 0.5, 1.0, float("inf")], [2.0, float("nan"), 0.0, 0.0]]))
    assert sigma[0] == 0.5 and torch.isnan(sigma[1])


def test_dominant_flow_nonfinite_gradient_flags_sample() -> None:
    _, acts, final, loss = run(True, seed=2)
    (grad,) = torch.autograd.grad(loss, final, retain_graph=True)
    grad = grad.clone()
    grad[0, 1] = float("nan")
    result = dominant_flow(final, acts[:-1], grad)
    assert torch.isnan(result.sigma_per_sample[0]).all() and torch.isfinite(result.sigma_per_sample[1:]).all()
    assert torch.isnan(result.sigma).all()


def test_dominant_flow_bad_input() -> None:
    _, acts, final, loss = run(False, seed=3)
    (grad,) = torch.autograd.grad(loss, final, retain_graph=True)
    with pytest.raises(ValueError, match=r"\(3, 3\)"):
        dominant_flow(final, acts[:-1], grad[:, :3])
    with pytest.raises(ValueError, match="exactly one"):
        dominant_flow(final, acts[:-1])
    with pytest.raises(ValueError, match="D_L=4"):
        dominant_flow(final, [torch.cat([acts[2], acts[2]], dim=1)], grad)
    with pytest.raises(ValueError, match="does not depend on activation 0"):
        dominant_flow(final, [torch.randn(3, 2, 6, 6, dtype=torch.float64, requires_grad=True)], grad)
    with pytest.raises(ValueError, match="does not depend on the final"):
        dominant_flow(final, acts[:-1], loss=(acts[0] ** 2).sum())
    with pytest.raises(ValueError, match="not in an autograd graph"):
        dominant_flow(final, [acts[0].detach()], grad)
    with pytest.raises(ValueError, match="B=3"):
        dominant_flow(final, [acts[0][:2]], grad)


def test_final_grad_histogram_matches_numpy() -> None:
    rng = np.random.default_rng(0)
    values = rng.normal(0, 0.01, size=(64, 10))
    values[0, :3] = [0.02, -0.02, 0.05]  # exactly on the last/first edge, and outside
    values[1, 0] = np.nan
    edges = np.linspace(-0.02, 0.02, 41)
    hist = final_grad_histogram(torch.from_numpy(values), torch.from_numpy(edges))
    finite = values[np.isfinite(values)]
    counts, _ = np.histogram(finite, edges)
    assert np.array_equal(hist.counts.numpy(), counts)
    assert hist.below == (finite < -0.02).sum() and hist.above == (finite > 0.02).sum()
    assert hist.nonfinite == 1 and hist.count == finite.size
    assert np.isclose(hist.mean.item(), finite.mean(), rtol=1e-12)
    assert np.isclose(hist.std.item(), finite.std(), rtol=1e-12)
    with pytest.raises(ValueError, match="increasing"):
        final_grad_histogram(torch.from_numpy(values), torch.tensor([0.0, 0.0, 1.0]))


def sequence_reference(rest, act: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """r per sample ``[B, H]`` for ``[B, T, H]`` activations by explicit loops over i, j, p and the positions q
    of a^(L): Θ_ijp = Σ_q ∂a^(L)_qj/∂a_pi · ∂L/∂a^(L)_qj (hidden unit = channel, token position = p)."""
    batch, tokens, hidden = act.shape
    r = torch.zeros(batch, hidden, dtype=torch.float64)
    for b in range(batch):
        jac = torch.autograd.functional.jacobian(lambda a: rest(a[None])[0], act[b].detach())  # [q, j, p, i]
        theta = torch.einsum("qjpi,qj->ijp", jac, grad[b])
        for i in range(hidden):
            terms = []
            for p in range(tokens):
                diagonal = theta[i, i, p].abs().item()
                rest_sum = abs(sum(theta[i, j, p].item() for j in range(grad.shape[-1]) if j != i))
                terms.append(0.0 if diagonal == rest_sum == 0 else diagonal / rest_sum)
            r[b, i] = sum(terms) / tokens
    return r


def test_dominant_flow_features_last_matches_loops_and_channel_first_layout() -> None:
    """[B, T, H] activations with feature_dims=-1: one r_i per hidden unit (not per token position)."""
    torch.manual_seed(4)
    tokens, hidden = 5, 3
    w1 = torch.randn(hidden, hidden, dtype=torch.float64)
    mix = torch.randn(tokens, tokens, dtype=torch.float64) / tokens  # token mixing, like attention
    x = torch.randn(2, tokens, hidden, dtype=torch.float64, requires_grad=True)

    def rest(a: torch.Tensor) -> torch.Tensor:
        return torch.tanh(torch.einsum("st,bth->bsh", mix, a) + a @ w1.T)

    act = torch.relu(x @ w1.T)
    final = rest(act)  # [B, T, H]
    loss = (final[:, 0] * torch.arange(1.0, hidden + 1, dtype=torch.float64)).sum() + final.pow(2).sum()
    (grad,) = torch.autograd.grad(loss, final, retain_graph=True)
    result = dominant_flow(final, [act], grad, feature_dims=[-1], final_feature_dim=-1)
    expected = sequence_reference(rest, act, grad)
    assert result.r[0].shape == (2, hidden)
    assert torch.allclose(result.r[0], expected, rtol=1e-10, atol=1e-300)
    assert torch.equal(result.sigma_per_sample[:, 0], (expected > 1).double().mean(dim=1))
    # the same numbers from the same network computed in a channel-first layout (feature_dims default 1)
    act_first = torch.relu(x @ w1.T).transpose(1, 2)  # [B, H, T]
    final_first = rest(act_first.transpose(1, 2)).transpose(1, 2)
    moved = dominant_flow(final_first, [act_first], grad.transpose(1, 2))
    assert torch.allclose(moved.r[0], result.r[0], rtol=1e-12)
    # dim 1 on this layout would pair token positions as channels: a different (wrong) answer, 5 entries
    assert dominant_flow(final, [act], grad).r[0].shape == (2, tokens)
    with pytest.raises(ValueError, match="not a non-batch dim"):
        dominant_flow(final, [act], grad, feature_dims=[0])
    with pytest.raises(ValueError, match="one per activation"):
        dominant_flow(final, [act], grad, feature_dims=[-1, -1])
