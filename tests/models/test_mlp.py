"""Sigmoid FCN (document 000, 5.2.1) and deep plain/residual MLPs: explicit forwards, init, gradient decay."""

import math

import pytest
import torch
from torch import nn

from gradlens.models import create_model
from gradlens.models.connections import IdentitySkip


def test_sigmoid_fcn_forward_layers_and_widths() -> None:
    torch.manual_seed(0)
    model = create_model("sigmoid_fcn_5").double()
    assert [model.layer(i).out_features for i in range(1, 6)] == [100, 100, 100, 100, 10]
    assert model.layer(1).in_features == 784 and model.layer(4) is model.fc4
    x = model.example_input(3, torch.Generator().manual_seed(0))
    h = x.flatten(1)
    for i in range(1, 6):
        h = h @ model.layer(i).weight.T + model.layer(i).bias
        if i < 5:
            h = 1 / (1 + torch.exp(-h))
    torch.testing.assert_close(model(x), h, rtol=1e-12, atol=1e-12)
    spec = model.gradlens_spec()
    assert spec.layer_names() == ["fc1", "fc2", "fc3", "fc4", "fc5"]
    assert spec.final_activation == "act4"
    with pytest.raises(ValueError, match="valid: 1..5"):
        model.layer(6)
    with pytest.raises(ValueError, match="valid depths"):
        create_model("sigmoid_fcn_1")


@pytest.mark.parametrize("variant", ["plain", "resnet"])
def test_deep_mlp_forward(variant: str) -> None:
    torch.manual_seed(0)
    model = create_model(f"mlp_{variant}_3", width=5, input_shape=(1, 2, 3)).double()
    x = model.example_input(4, torch.Generator().manual_seed(0))
    h = torch.relu(x.flatten(1) @ model.stem.weight.T + model.stem.bias)
    for block in model.blocks:
        z = h @ block.fc.weight.T + block.fc.bias
        h = torch.relu(z + h) if variant == "resnet" else torch.relu(z)
    torch.testing.assert_close(model(x), h @ model.head.weight.T + model.head.bias, rtol=1e-12, atol=1e-12)
    spec = model.gradlens_spec()
    assert [layer.residual for layer in spec.layers] == [False, *([variant == "resnet"] * 3), False]
    assert sum(isinstance(m, IdentitySkip) for m in model.modules()) == (3 if variant == "resnet" else 0)


def test_he_init_statistics() -> None:
    torch.manual_seed(0)
    model = create_model("mlp_resnet_16", width=128, init="he")
    # Kaiming normal: sd √(2/fan_in); the stem has fan_in 64, residual branches 128 and are scaled by 1/√16
    assert model.stem.weight.std().item() == pytest.approx(math.sqrt(2 / 64), rel=0.05)
    branch = torch.cat([b.fc.weight.flatten() for b in model.blocks])
    assert branch.std().item() == pytest.approx(math.sqrt(2 / 128) / 4, rel=0.05)
    assert all(torch.count_nonzero(b.fc.bias) == 0 for b in model.blocks)
    with pytest.raises(ValueError, match="unknown init"):
        create_model("mlp_plain_2", init="xavier")


def first_last_grad_ratio(name: str) -> float:
    torch.manual_seed(0)
    model = create_model(name)
    gen = torch.Generator().manual_seed(0)
    x = model.example_input(128, gen)
    y = torch.randint(10, (128,), generator=gen)
    nn.functional.cross_entropy(model(x), y).backward()
    return (model.blocks[0].fc.weight.grad.norm() / model.blocks[-1].fc.weight.grad.norm()).item()


def test_vanishing_gradient_demo_at_depth_30() -> None:
    """Default init: plain early-layer gradients are orders of magnitude below late ones, residual not."""
    assert first_last_grad_ratio("mlp_plain_30") < 1e-4
    assert first_last_grad_ratio("mlp_resnet_30") > 1e-2
