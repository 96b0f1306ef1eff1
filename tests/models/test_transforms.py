"""T, T⁻¹, T′ and equivalent training of document 004 (sections 3, 4.1; appendix D.3)."""

import pytest
import torch
import torch.nn.functional as F

from gradlens.models.simplified import build_simplified, dominant_mask
from gradlens.models.transforms import (
    decay_penalty,
    dominant_path,
    equivalent_plain,
    equivalent_residual,
    id_entries,
    inverse_transform,
    transform,
)


@pytest.fixture(autouse=True)
def one_thread():
    # Tiny float64 convolutions are dominated by thread synchronisation on a shared 2-core machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def small(kind: str, init: str | None = None):
    return build_simplified(8, kind=kind, in_channels=2, image_size=8, init=init).double()


def test_id_entries_explicit() -> None:
    rho = id_entries(torch.zeros(4, 2, 3, 3))  # channel doubling: only c < min(C, D) = 2
    expected = torch.zeros(4, 2, 3, 3)
    expected[0, 0, 1, 1] = expected[1, 1, 1, 1] = 1
    assert torch.equal(rho, expected)
    wide = id_entries(torch.zeros(2, 4, 5, 5))
    assert wide.sum() == 2 and wide[1, 1, 2, 2] == 1
    with pytest.raises(ValueError, match="odd U, V"):
        id_entries(torch.zeros(2, 2, 2, 2))


def test_round_trip_and_untouched_parameters() -> None:
    torch.manual_seed(0)
    net = small("residual")
    layers = net.id_layer_names()
    state = net.state_dict()
    there = transform(state, layers)
    back = inverse_transform(there, layers)
    for key, value in state.items():
        if key.removesuffix(".weight") in layers:
            torch.testing.assert_close(there[key] - value, id_entries(value), rtol=0, atol=1e-15)
            # (r + 1) - 1 loses at most half an ulp of 1 = 1.1e-16.
            torch.testing.assert_close(back[key], value, rtol=0, atol=1.2e-16)
        else:
            assert torch.equal(there[key], value) and torch.equal(back[key], value)


@pytest.mark.parametrize("init", ["hmwi", "kwi"])
def test_equivalent_networks_have_identical_outputs(init: str) -> None:
    torch.manual_seed(0)
    resnet = small("residual", init)
    plain = equivalent_plain(resnet)
    assert plain.kind == "plain" and plain.fc.weight.dtype == torch.float64
    x = torch.randn(5, 2, 8, 8, dtype=torch.float64)
    scale = resnet(x).abs().max()
    assert (resnet(x) - plain(x)).abs().max() <= 1e-12 * scale
    twin = equivalent_residual(plain)
    assert (twin(x) - resnet(x)).abs().max() <= 1e-12 * scale
    # Building twins does not consume the global RNG.
    state = torch.random.get_rng_state()
    equivalent_plain(resnet)
    assert torch.equal(torch.random.get_rng_state(), state)


def test_penalties_agree_with_equal_gradients() -> None:
    torch.manual_seed(0)
    resnet = small("residual")
    plain = equivalent_plain(resnet)
    p_res, p_plain = decay_penalty(resnet, "l2"), decay_penalty(plain, "t_inverse")
    explicit = sum((p.detach() ** 2).sum() for p in resnet.parameters())
    torch.testing.assert_close(p_res.detach(), explicit, rtol=1e-14, atol=0)
    torch.testing.assert_close(p_plain, p_res, rtol=1e-13, atol=0)
    # The naive ‖p‖² of the plain net exceeds ‖r‖² by Σ_ID (2 r + 1), with 16·2 + (16 + 32) + (32 + 64)
    # ID entries at depth 8 (the channel-doubling kernels have min(C, D) = C of them).
    kernels = [resnet.get_submodule(name).weight for name in resnet.id_layer_names()]
    id_sum = sum((id_entries(w) * w).sum() for w in kernels)
    torch.testing.assert_close(decay_penalty(plain, "l2") - p_res, 176 + 2 * id_sum, rtol=1e-12, atol=0)
    p_res.backward()
    p_plain.backward()
    for (name, a), b in zip(resnet.named_parameters(), plain.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=1e-15, msg=name)
    with pytest.raises(ValueError, match="simplified plain net"):
        decay_penalty(resnet, "t_inverse")
    with pytest.raises(ValueError, match="unknown penalty kind"):
        decay_penalty(resnet, "l1")
    with pytest.raises(ValueError, match="simplified residual net"):
        equivalent_plain(plain)


def train_pair(plain_penalty: str, steps: int = 20) -> tuple[float, float, float]:
    """Train r (‖r‖²) and p = T(r0) (``plain_penalty``) on the same batches; return max gaps, loss drop."""
    torch.manual_seed(0)
    resnet = small("residual", "kwi")
    plain = equivalent_plain(resnet)
    opt_r = torch.optim.SGD(resnet.parameters(), lr=0.05)
    opt_p = torch.optim.SGD(plain.parameters(), lr=0.05)
    decay = 1e-2
    data = torch.Generator().manual_seed(1)
    probe = torch.randn(16, 2, 8, 8, dtype=torch.float64, generator=data)
    loss_gap = out_gap = 0.0
    losses = []
    for _ in range(steps):
        x = torch.randn(8, 2, 8, 8, dtype=torch.float64, generator=data)
        y = torch.randint(0, 10, (8,), generator=data)
        cost_r = F.cross_entropy(resnet(x), y) + decay * decay_penalty(resnet, "l2")
        cost_p = F.cross_entropy(plain(x), y) + decay * decay_penalty(plain, plain_penalty)
        opt_r.zero_grad()
        opt_p.zero_grad()
        cost_r.backward()
        cost_p.backward()
        opt_r.step()
        opt_p.step()
        losses.append(cost_r.item())
        with torch.no_grad():
            loss_gap = max(loss_gap, abs(cost_r.item() - cost_p.item()))
            out_gap = max(out_gap, (resnet(probe) - plain(probe)).abs().max().item())
    return loss_gap, out_gap, losses[0] - losses[-1]


def test_equivalent_training_stays_equivalent() -> None:
    loss_gap, out_gap, drop = train_pair("t_inverse")
    assert drop > 0.1  # the weights really moved
    assert loss_gap < 1e-12 and out_gap < 1e-12, (loss_gap, out_gap)
    # Negative control: the ordinary penalty ‖p‖² on the plain net breaks the equivalence.
    loss_gap_l2, out_gap_l2, _ = train_pair("l2", steps=3)
    assert loss_gap_l2 > 1.0 and out_gap_l2 > 1e-3


def test_t_prime_keeps_only_dominant_paths() -> None:
    torch.manual_seed(0)
    resnet = small("residual")
    dominant = dominant_path(resnet)
    assert dominant.kind == "dominant"
    for name in resnet.id_layer_names():
        r = resnet.get_submodule(name).weight.detach()
        conv = dominant.get_submodule(name)
        d, c = r.shape[:2]
        mask = dominant_mask(d, c).double()
        kernel = conv.weight.detach() * conv.mask
        for i in range(d):
            for j in range(c):
                if mask[i, j]:
                    expected = r[i, j].clone()
                    expected[1, 1] += 1  # I + R_s, both stacked diagonals of a channel-doubling kernel
                    torch.testing.assert_close(kernel[i, j], expected, rtol=0, atol=1e-15)
                else:
                    assert torch.all(kernel[i, j] == 0)
    for key in ("conv.weight", "conv.bias", "fc.weight", "fc.bias", "group1.0.conv.bias"):
        assert torch.equal(dominant.state_dict()[key], resnet.state_dict()[key])
    with pytest.raises(ValueError, match="simplified residual net"):
        dominant_path(dominant)
