"""Short circuits (document 000, eq. 13) against hand-computed gradients in float64."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gradlens.models import create_model
from gradlens.models.short_circuit import ShortCircuit, ShortCircuits, gap_short_circuits, select_fronts

W_SC = 0.3


class TinyMLP(nn.Module):
    """x [B, 3] -> fc1 (4) -> fc2 (5) -> fc3 (5) -> fc4 (5) -> fc5 (2), sigmoid between layers."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(3, 4)
        self.fc2 = nn.Linear(4, 5)
        self.fc3 = nn.Linear(5, 5)
        self.fc4 = nn.Linear(5, 5)
        self.fc5 = nn.Linear(5, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for fc in (self.fc1, self.fc2, self.fc3, self.fc4):
            x = torch.sigmoid(fc(x))
        return self.fc5(x)


class TinyCNN(nn.Module):
    """x [B, 2, 5, 5] -> conv1 (3 ch) -> conv2 (3 ch) -> conv3 (3 ch) -> fc, tanh between layers."""

    def __init__(self, conv3_stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 3, 3, padding=1)
        self.conv2 = nn.Conv2d(3, 3, 3, padding=1, bias=False)
        self.conv3 = nn.Conv2d(3, 3, 3, padding=1, stride=conv3_stride)
        size = 5 if conv3_stride == 1 else 3
        self.fc = nn.Linear(3 * size * size, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.tanh(self.conv1(x))
        x = torch.tanh(self.conv2(x))
        x = torch.tanh(self.conv3(x))
        return self.fc(x.flatten(1))


def _loss(out: torch.Tensor) -> torch.Tensor:
    target = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).reshape(out.shape)
    return 0.5 * ((out - target) ** 2).sum()


def _plain_pass(model: nn.Module, x: torch.Tensor, names: list[str]) -> dict[str, object]:
    """Backprop through the plain model; return grads, layer inputs a and output sensitivities δ."""
    inputs: dict[str, torch.Tensor] = {}
    outputs: dict[str, torch.Tensor] = {}
    handles = []
    for name in names:

        def hook(module: nn.Module, args: tuple, out: torch.Tensor, name: str = name) -> None:
            inputs[name] = args[0]
            out.retain_grad()
            outputs[name] = out

        handles.append(model.get_submodule(name).register_forward_hook(hook))
    model.zero_grad()
    out = model(x)
    _loss(out).backward()
    for handle in handles:
        handle.remove()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    return {
        "out": out.detach(),
        "grads": grads,
        "a": {n: t.detach() for n, t in inputs.items()},
        "z": {n: t.detach() for n, t in outputs.items()},
        "delta": {n: t.grad.clone() for n, t in outputs.items()},
    }


def _grads(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad()
    out = model(x)
    _loss(out).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    return out.detach(), grads


def _mlp() -> tuple[TinyMLP, torch.Tensor]:
    torch.manual_seed(0)
    model = TinyMLP().double()
    x = torch.randn(6, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    return model, x


@pytest.mark.parametrize("mode", ["weight_only", "propagate"])
def test_mlp_gradients_equal_eq13_by_hand(mode: str) -> None:
    model, x = _mlp()
    plain = _plain_pass(model, x, ["fc1", "fc2", "fc4"])
    d2, d4 = plain["delta"]["fc2"], plain["delta"]["fc4"]  # [B, 5]: δ^{l+1} and δ_sc
    a2 = plain["a"]["fc2"]  # [B, 4]
    mixed = d2 + W_SC * d4

    ShortCircuits([ShortCircuit("fc2", "fc4", W_SC, mode)]).install(model)
    out, grads = _grads(model, x)

    assert torch.equal(out, plain["out"])
    # eq. 13: ∂J/∂W^l = Σ_b (δ^{l+1} + w δ_sc) a^lᵀ, in both modes.
    expected_w2 = torch.einsum("bo,bi->oi", mixed, a2)
    torch.testing.assert_close(grads["fc2.weight"], expected_w2, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(grads["fc2.bias"], mixed.sum(0), rtol=1e-12, atol=1e-14)
    assert not torch.allclose(grads["fc2.weight"], plain["grads"]["fc2.weight"])
    # Layers at and above the rear never change.
    for name in ("fc3", "fc4", "fc5"):
        for p in ("weight", "bias"):
            assert torch.equal(grads[f"{name}.{p}"], plain["grads"][f"{name}.{p}"])
    # Below the front: unchanged for Algorithm 1, fed by δ̃ = δ + w δ_sc when propagating.
    if mode == "weight_only":
        expected_w1 = plain["grads"]["fc1.weight"]
    else:
        z1 = plain["z"]["fc1"]
        s1 = torch.sigmoid(z1)
        d1 = (mixed @ model.fc2.weight.detach()) * s1 * (1 - s1)  # δ^2 = f'(Z^2) ⊙ δ̃^3 W^2
        expected_w1 = torch.einsum("bo,bi->oi", d1, x)
        assert not torch.allclose(expected_w1, plain["grads"]["fc1.weight"])
    torch.testing.assert_close(grads["fc1.weight"], expected_w1, rtol=1e-12, atol=1e-14)


def _unfold_weight_grad(
    a: torch.Tensor, delta: torch.Tensor, kernel: int, padding: int, stride: int
) -> torch.Tensor:
    """Conv weight gradient by im2col: grad[o, c, i, j] = Σ_{b,p} δ[b, o, p] patch[b, (c, i, j), p]."""
    patches = F.unfold(a, kernel, padding=padding, stride=stride)  # [B, C·k·k, P]
    grad = torch.einsum("bop,bkp->ok", delta.flatten(2), patches)
    return grad.reshape(delta.shape[1], a.shape[1], kernel, kernel)


@pytest.mark.parametrize("mode", ["weight_only", "propagate"])
def test_conv_gradients_equal_eq13_by_hand(mode: str) -> None:
    torch.manual_seed(0)
    model = TinyCNN().double()
    x = torch.randn(2, 2, 5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    plain = _plain_pass(model, x, ["conv1", "conv2", "conv3"])
    mixed = plain["delta"]["conv1"] + W_SC * plain["delta"]["conv3"]  # [B, 3, 5, 5]

    scs = ShortCircuits([ShortCircuit("conv1", "conv3", W_SC, mode)]).install(model)
    out, grads = _grads(model, x)
    assert torch.equal(out, plain["out"])
    expected = _unfold_weight_grad(x, mixed, 3, 1, 1)
    torch.testing.assert_close(grads["conv1.weight"], expected, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(grads["conv1.bias"], mixed.sum((0, 2, 3)), rtol=1e-12, atol=1e-14)
    for name in ("conv2.weight", "conv3.weight", "conv3.bias", "fc.weight"):
        assert torch.equal(grads[name], plain["grads"][name])
    scs.remove()

    # Front in the middle (conv2, no bias), to see the input gradient: below the front, conv1 gets
    # the plain sensitivity in weight_only mode and W2ᵀ(δ + w δ_sc) when propagating.
    plain = _plain_pass(model, x, ["conv1", "conv2", "conv3"])
    ShortCircuits([ShortCircuit("conv2", "conv3", W_SC, mode)]).install(model)
    _, grads = _grads(model, x)
    mixed = plain["delta"]["conv2"] + W_SC * plain["delta"]["conv3"]
    a2 = plain["a"]["conv2"]
    torch.testing.assert_close(
        grads["conv2.weight"], _unfold_weight_grad(a2, mixed, 3, 1, 1), rtol=1e-12, atol=1e-14
    )
    if mode == "weight_only":
        assert torch.equal(grads["conv1.weight"], plain["grads"]["conv1.weight"])
    else:
        grad_a2 = torch.nn.grad.conv2d_input(a2.shape, model.conv2.weight.detach(), mixed, padding=1)
        d1 = grad_a2 * (1 - torch.tanh(plain["z"]["conv1"]) ** 2)
        torch.testing.assert_close(
            grads["conv1.weight"], _unfold_weight_grad(x, d1, 3, 1, 1), rtol=1e-12, atol=1e-14
        )


def test_multiple_rears_and_modes_add_up() -> None:
    model, x = _mlp()
    plain = _plain_pass(model, x, ["fc2", "fc3", "fc4"])
    d2, d3, d4 = (plain["delta"][n] for n in ("fc2", "fc3", "fc4"))
    ShortCircuits(
        [ShortCircuit("fc2", "fc4", 0.2, "weight_only"), ShortCircuit("fc2", "fc3", 0.5, "propagate")]
    ).install(model)
    _, grads = _grads(model, x)
    mixed = d2 + 0.2 * d4 + 0.5 * d3
    torch.testing.assert_close(grads["fc2.weight"], torch.einsum("bo,bi->oi", mixed, plain["a"]["fc2"]))


def test_zero_weight_disable_and_remove_restore_backbone() -> None:
    model, x = _mlp()
    hooks_before = {n: dict(m._forward_hooks) for n, m in model.named_modules()}
    out_ref, ref = _grads(model, x)

    scs = ShortCircuits([ShortCircuit("fc2", "fc4", 0.0, "propagate"), ShortCircuit("fc3", "fc4", 0.0)])
    scs.install(model)
    assert model.short_circuits is scs
    out, grads = _grads(model, x)
    assert torch.equal(out, out_ref)
    assert all(torch.equal(grads[n], ref[n]) for n in ref)
    scs.remove()

    scs = ShortCircuits([ShortCircuit("fc2", "fc4", 0.7)]).install(model)
    scs.enabled = False
    assert all(torch.equal(g, ref[n]) for n, g in _grads(model, x)[1].items())
    scs.enabled = True
    assert not torch.equal(_grads(model, x)[1]["fc2.weight"], ref["fc2.weight"])
    scs.remove()
    assert not hasattr(model, "short_circuits")
    assert {n: dict(m._forward_hooks) for n, m in model.named_modules()} == hooks_before
    assert all(torch.equal(g, ref[n]) for n, g in _grads(model, x)[1].items())
    assert not scs._pending


def test_several_forwards_before_one_backward() -> None:
    """Gradient accumulation: each forward pairs its own front and rear (slots live with the graph)."""
    model, x = _mlp()
    x2 = x.flip(0) * 0.5
    ShortCircuits([ShortCircuit("fc2", "fc4", W_SC)]).install(model)
    _, g1 = _grads(model, x)
    _, g2 = _grads(model, x2)
    model.zero_grad()
    (_loss(model(x)) + _loss(model(x2))).backward()
    torch.testing.assert_close(model.fc2.weight.grad, g1["fc2.weight"] + g2["fc2.weight"])


def test_no_grad_forward_leaves_nothing_behind() -> None:
    model, x = _mlp()
    scs = ShortCircuits([ShortCircuit("fc2", "fc4")]).install(model)
    with torch.no_grad():
        model(x)
    assert not scs._pending
    assert all(p.grad is None for p in model.parameters())


def test_precondition_errors() -> None:
    model, x = _mlp()
    with pytest.raises(ValueError, match=r"front 'fc4' does not come before rear 'fc2'"):
        ShortCircuits([ShortCircuit("fc4", "fc2")]).install(model)
    with pytest.raises(ValueError, match=r"front output has 4 features, rear output 5 features"):
        ShortCircuits([ShortCircuit("fc1", "fc4")]).install(model)
    with pytest.raises(ValueError, match=r"'fc9' is not a module"):
        ShortCircuits([ShortCircuit("fc2", "fc9")]).install(model)
    with pytest.raises(ValueError, match=r"mode 'both' is unknown"):
        ShortCircuit("fc2", "fc4", mode="both")
    with pytest.raises(ValueError, match=r"listed twice"):
        ShortCircuits([ShortCircuit("fc2", "fc4"), ShortCircuit("fc2", "fc4", 0.1)])
    assert not hasattr(model, "short_circuits")
    assert all(not m._forward_hooks for m in model.modules())

    conv = TinyCNN(conv3_stride=2).double()
    ShortCircuits([ShortCircuit("conv1", "conv3")]).install(conv)  # 3 channels each: passes statically
    xc = torch.randn(1, 2, 5, 5, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"front 'conv1' \(1, 3, 5, 5\), rear 'conv3' \(1, 3, 3, 3\)"):
        conv(xc)
    conv.short_circuits.remove()
    with pytest.raises(ValueError, match=r"front '1' is a Flatten"):
        seq = nn.Sequential(nn.Linear(2, 2), nn.Flatten(), nn.Linear(2, 2))
        ShortCircuits([ShortCircuit("1", "2")]).install(seq)


def test_select_fronts_follows_algorithm_1() -> None:
    names = [f"c{i}" for i in range(1, 7)]
    assert select_fronts(names, "c6", 2) == ["c2", "c4"]
    assert select_fronts(names, "c6", 3) == ["c3"]
    assert select_fronts(names, "c4", 1) == ["c1", "c2", "c3"]
    assert select_fronts(names, "c4", 4) == []
    with pytest.raises(ValueError, match="selects no front"):
        gap_short_circuits(names, ["c3"], 4)
    scs = gap_short_circuits(names, ["c4", "c6"], 2, weight=0.1)
    assert [(sc.front, sc.rear) for sc in scs] == [("c2", "c4"), ("c2", "c6"), ("c4", "c6")]


def test_scresnet_is_resnet_with_stage_short_circuits() -> None:
    torch.manual_seed(0)
    sc_model = create_model("scresnet_v1_20").double()
    torch.manual_seed(0)
    backbone = create_model("resnet_v1_20").double()
    assert sc_model.gradlens_spec() == backbone.gradlens_spec()
    pairs = [(sc.front, sc.rear) for sc in sc_model.short_circuits]
    assert pairs[:2] == [("stage1.0.conv2", "stage1.2.conv2"), ("stage1.1.conv2", "stage1.2.conv2")]
    assert len(pairs) == 6 and all(
        sc.weight == 0.2 and sc.mode == "weight_only" for sc in sc_model.short_circuits
    )
    multi = create_model("scresnet_v1_20", sc_rears="every_block", sc_stages=(2,))
    assert [(sc.front, sc.rear) for sc in multi.short_circuits] == [
        ("stage2.0.conv2", "stage2.1.conv2"),
        ("stage2.0.conv2", "stage2.2.conv2"),
        ("stage2.1.conv2", "stage2.2.conv2"),
    ]
    with pytest.raises(ValueError, match="selects no front"):
        create_model("scresnet_v1_8")
    with pytest.raises(ValueError, match="not 6n\\+2"):
        create_model("scresnet_v1_21")


def test_scresnet_gradient_in_a_strided_stage() -> None:
    """SCResNet-14, stage 2 (stride 2 at its first conv): eq. 13 on the front conv, BN in eval mode."""
    torch.manual_seed(0)
    backbone = create_model("resnet_v1_14", image_size=8).double().eval()
    x = backbone.example_input(2, torch.Generator().manual_seed(0))
    front, rear = "stage2.0.conv2", "stage2.1.conv2"
    plain = _plain_pass(backbone, x, [front, rear])
    ShortCircuits([ShortCircuit(front, rear, 0.2)]).install(backbone)
    out, grads = _grads(backbone, x)
    assert torch.equal(out, plain["out"])
    mixed = plain["delta"][front] + 0.2 * plain["delta"][rear]
    expected = _unfold_weight_grad(plain["a"][front], mixed, 3, 1, 1)
    torch.testing.assert_close(grads[f"{front}.weight"], expected, rtol=1e-10, atol=1e-12)
    changed = [n for n in grads if not torch.equal(grads[n], plain["grads"][n])]
    assert changed == [f"{front}.weight"]


def test_scfcn_and_scencoder_short_circuits() -> None:
    scfcn = create_model("scfcn_5")
    assert [(sc.front, sc.rear, sc.weight) for sc in scfcn.short_circuits] == [("fc2", "fc4", 0.2)]
    assert scfcn.gradlens_spec() == create_model("sigmoid_fcn_5").gradlens_spec()
    enc = create_model("scencoder_12", sc_mode="propagate")
    assert [(sc.front, sc.rear, sc.mode) for sc in enc.short_circuits] == [
        ("blocks.3.fc2", "blocks.11.fc2", "propagate"),
        ("blocks.7.fc2", "blocks.11.fc2", "propagate"),
    ]
    assert [sc.front for sc in create_model("scencoder_2").short_circuits] == ["blocks.0.fc2"]
    with pytest.raises(ValueError, match="depth 1 leaves no block"):
        create_model("scencoder_1")


def test_scencoder_gradient_on_token_inputs() -> None:
    """Linear front on [B, T, d] inputs: eq. 13 sums over batch and positions."""
    torch.manual_seed(0)
    backbone = create_model("encoder_3", seq_len=5, d_model=8, heads=2, d_ff=8).double()
    x = backbone.example_input(2, torch.Generator().manual_seed(0))
    front, rear = "blocks.0.fc2", "blocks.2.fc2"
    plain = _plain_pass(backbone, x, [front, rear])
    ShortCircuits([ShortCircuit(front, rear, 0.2)]).install(backbone)
    out, grads = _grads(backbone, x)
    assert torch.equal(out, plain["out"])
    mixed = plain["delta"][front] + 0.2 * plain["delta"][rear]  # [B, T, d]
    torch.testing.assert_close(
        grads[f"{front}.weight"], torch.einsum("bto,bti->oi", mixed, plain["a"][front])
    )
    torch.testing.assert_close(grads[f"{front}.bias"], mixed.sum((0, 1)))
