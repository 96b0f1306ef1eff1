"""Thin MLPs of document 002, section 4.1: each variant's forward against an explicit formula (float64)."""

import pytest
import torch
from torch import nn

from gradlens.models import create_model
from gradlens.models.connections import GatedSkip, IdentitySkip
from gradlens.models.thin_mlp import DiracLinear
from gradlens.models.van import VANSkip

WIDTH, IN, CLASSES = 3, 4, 2


def build(variant: str, depth: int = 2) -> nn.Module:
    torch.manual_seed(0)
    model = create_model(f"thin_mlp_{variant}_{depth}", input_shape=IN, width=WIDTH, num_classes=CLASSES)
    model.double().eval()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # non-trivial BN statistics and affine parameters, α in (0, 1)
        for module in model.modules():
            if isinstance(module, nn.BatchNorm1d):
                module.running_mean.copy_(torch.randn(WIDTH, generator=gen))
                module.running_var.copy_(torch.rand(WIDTH, generator=gen) + 0.5)
                module.weight.copy_(torch.randn(WIDTH, generator=gen))
                module.bias.copy_(torch.randn(WIDTH, generator=gen))
            if isinstance(module, VANSkip):
                module.alpha.copy_(torch.rand(WIDTH, generator=gen))
    return model


def bn(module: nn.BatchNorm1d, x: torch.Tensor) -> torch.Tensor:
    normalised = (x - module.running_mean) / torch.sqrt(module.running_var + module.eps)
    return normalised * module.weight + module.bias


def linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return x @ w.T + b


def reference(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    z = linear(x, model.stem.weight, model.stem.bias)
    for block in model.blocks:
        w = block.fc.weight
        if model.variant == "dirac":  # Ŵ = diag(a) + diag(b) W / ‖W_i,:‖
            w = torch.diag(block.fc.identity_scale) + block.fc.weight_scale[:, None] * (
                w / w.norm(dim=1, keepdim=True)
            )
        fx = linear(torch.clamp(bn(block.bn, z), min=0), w, block.fc.bias)
        if model.variant == "resnet":
            z = fx + z
        elif model.variant == "highway":
            t = torch.sigmoid(linear(z, block.gate.weight, block.gate.bias))
            z = t * fx + (1 - t) * z
        elif model.variant in ("van", "van0"):
            z = fx + (1 - block.skip.alpha) * z
        else:
            z = fx
    return linear(torch.clamp(bn(model.out_bn, z), min=0), model.head.weight, model.head.bias)


@pytest.mark.parametrize("variant", ["plain", "resnet", "highway", "dirac", "van", "van0"])
def test_forward_matches_explicit_formula(variant: str) -> None:
    model = build(variant)
    x = model.example_input(5, torch.Generator().manual_seed(2))
    torch.testing.assert_close(model(x), reference(model, x), rtol=1e-12, atol=1e-12)


def test_connection_markers_and_sources() -> None:
    kinds = {"resnet": IdentitySkip, "highway": GatedSkip, "van": VANSkip, "van0": VANSkip}
    for variant, kind in kinds.items():
        model = build(variant, depth=3)
        skips = [m for m in model.modules() if isinstance(m, kind)]
        assert [s.source for s in skips] == ["stem", "blocks.0", "blocks.1"]
    assert not any(isinstance(m, (IdentitySkip, GatedSkip, VANSkip)) for m in build("plain").modules())
    assert build("van0").lambda_zero and not build("van").lambda_zero


def test_initial_values() -> None:
    torch.manual_seed(0)
    highway = create_model("thin_mlp_highway_1")
    assert torch.equal(highway.blocks[0].gate.bias.detach(), torch.full((50,), -1.0))
    van = create_model("thin_mlp_van_2")
    assert all(torch.equal(b.skip.alpha.detach(), torch.zeros(50)) for b in van.blocks)
    dirac = create_model("thin_mlp_dirac_1").blocks[0].fc
    assert isinstance(dirac, DiracLinear)
    assert torch.equal(dirac.identity_scale.detach(), torch.ones(50))
    assert torch.allclose(dirac.weight_scale.detach(), torch.full((50,), 0.1))
    # rows of W̄ have unit norm, so Ŵ - I has rows of norm 0.1 at initialisation
    rows = (dirac.effective_weight() - torch.eye(50)).norm(dim=1)
    torch.testing.assert_close(rows, torch.full((50,), 0.1))


def test_spec_and_shapes() -> None:
    model = create_model("thin_mlp_highway_2")
    spec = model.gradlens_spec()
    spec.validate(model)
    assert spec.layer_names() == [
        "stem",
        "blocks.0.fc",
        "blocks.0.gate",
        "blocks.1.fc",
        "blocks.1.gate",
        "head",
    ]
    assert spec.final_activation == "out_relu"
    digits = create_model("thin_mlp_plain_3", input_shape=(1, 8, 8))
    assert digits.stem.in_features == 64 and digits.input_shape == (1, 8, 8)


@pytest.mark.parametrize("depth", [0, 31])
def test_invalid_depth(depth: int) -> None:
    with pytest.raises(ValueError, match=r"valid depths: 1\.\.30"):
        create_model(f"thin_mlp_resnet_{depth}")
