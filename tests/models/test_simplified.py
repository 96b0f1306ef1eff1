"""Simplified PlnNet / ResNet / dominant-path net of document 004 and the KWI / HMWI initialisers."""

import math

import pytest
import torch
import torch.nn.functional as F

from gradlens.models import create_model
from gradlens.models.connections import IdentitySkip
from gradlens.models.simplified import DiagonalConv2d, build_simplified, dominant_mask, hmwi_, kwi_


def test_architecture_of_appendix_a() -> None:
    model = create_model("simplified_resnet_20")
    spec = model.gradlens_spec()
    assert len(spec.layers) == 20  # L = 3N + 2 with N = 6
    assert [layer.residual for layer in spec.layers] == [False] + [True] * 18 + [False]
    convs = [model.get_submodule(name) for name in spec.layer_names()[:-1]]
    assert [c.out_channels for c in convs] == [16] * 7 + [32] * 6 + [64] * 6  # first N + 1 layers: 16
    assert [c.stride[0] for c in convs] == [1] * 7 + [2] + [1] * 5 + [2] + [1] * 5
    assert all(c.kernel_size == (3, 3) for c in convs)
    skips = [m for m in model.modules() if isinstance(m, IdentitySkip)]
    assert len(skips) == 18 and skips[0].source == "relu" and skips[1].source == "group0.0.relu"
    plain = create_model("simplified_plain_20")
    assert not any(isinstance(m, IdentitySkip) for m in plain.modules())
    assert {k: v.shape for k, v in plain.state_dict().items()} == {
        k: v.shape for k, v in model.state_dict().items()
    }


@pytest.mark.parametrize(("init", "sigma"), [(kwi_, lambda s: math.sqrt(2 / s)), (hmwi_, lambda s: 1 / s)])
def test_initialiser_std(init, sigma) -> None:
    torch.manual_seed(0)
    weight = torch.empty(64, 32, 3, 3, dtype=torch.float64)  # S = 288, 18432 samples
    init(weight)
    # Sample std of n normals has relative standard error 1/sqrt(2n) = 0.5%; allow 3%.
    assert weight.std().item() == pytest.approx(sigma(288), rel=0.03)
    assert abs(weight.mean().item()) < 4 * sigma(288) / math.sqrt(weight.numel())


def test_default_inits_and_zero_biases() -> None:
    torch.manual_seed(0)
    plain, residual = build_simplified(20, kind="plain"), build_simplified(20, kind="residual")
    w_plain = torch.cat([plain.get_submodule(f"group2.{i}.conv").weight.flatten() for i in range(1, 6)])
    w_res = torch.cat([residual.get_submodule(f"group2.{i}.conv").weight.flatten() for i in range(1, 6)])
    s = 64 * 9
    assert w_plain.std().item() == pytest.approx(math.sqrt(2 / s), rel=0.03)
    assert w_res.std().item() == pytest.approx(1 / s, rel=0.03)
    biases = [p for name, p in residual.named_parameters() if name.endswith("bias")]
    assert len(biases) == 20 and all(torch.all(b == 0) for b in biases)
    assert build_simplified(8, kind="residual", init="kwi").init == "kwi"


def test_blocks_compute_document_formulas() -> None:
    torch.manual_seed(0)
    model = build_simplified(5, kind="residual", image_size=8).double()
    x = torch.randn(2, 16, 8, 8, dtype=torch.float64)
    square, doubling = model.group0[0], model.group1[0]
    expected = torch.relu(x + F.conv2d(x, square.conv.weight, square.conv.bias, padding=1))
    torch.testing.assert_close(square(x), expected, rtol=0, atol=1e-15)
    tilde = torch.cat([x[:, :, ::2, ::2], torch.zeros(2, 16, 4, 4, dtype=torch.float64)], dim=1)
    expected = torch.relu(tilde + F.conv2d(x, doubling.conv.weight, doubling.conv.bias, stride=2, padding=1))
    torch.testing.assert_close(doubling(x), expected, rtol=0, atol=1e-15)


def test_mnist_size_pool_is_global_average() -> None:
    model = build_simplified(8, kind="plain", in_channels=1, image_size=28).double()
    seen = {}
    model.group2.register_forward_hook(lambda m, i, o: seen.setdefault("last", o))
    model.pool.register_forward_hook(lambda m, i, o: seen.setdefault("pool", o))
    out = model(model.example_input(3))
    assert out.shape == (3, 10) and seen["last"].shape == (3, 64, 7, 7)
    torch.testing.assert_close(seen["pool"], seen["last"].mean(dim=(2, 3), keepdim=True))


def test_dominant_kernels_are_diagonal() -> None:
    torch.manual_seed(0)
    model = create_model("simplified_dominant_8")
    for block in model.blocks:
        conv = block.conv
        assert isinstance(conv, DiagonalConv2d)
        d, c = conv.out_channels, conv.in_channels
        kernel = conv.weight.detach()
        for i in range(d):
            for j in range(c):
                if i % c == j:  # dominant path: I + R_s (1 added at the centre)
                    assert abs(kernel[i, j, 1, 1].item() - 1) < 10 / (c * 9)
                else:
                    assert torch.all(kernel[i, j] == 0)
        assert conv.num_free_weights == d * 9


def test_diagonal_conv_matches_per_channel_reference_and_masks_gradients() -> None:
    torch.manual_seed(0)
    conv = DiagonalConv2d(3, 6, stride=2).double()
    with torch.no_grad():
        conv.weight.normal_()  # also off the mask: must not act and must get zero gradient
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    out = conv(x)
    for d in range(6):
        c = d % 3
        kernel = conv.weight[d : d + 1, c : c + 1]
        ref = F.conv2d(x[:, c : c + 1], kernel, conv.bias[d : d + 1], stride=2, padding=1)
        torch.testing.assert_close(out[:, d : d + 1], ref, rtol=0, atol=1e-13)
    out.sum().backward()
    assert torch.all(conv.weight.grad * (1 - conv.mask) == 0)
    assert torch.equal(dominant_mask(4, 2), torch.tensor([[1.0, 0], [0, 1], [1, 0], [0, 1]]))


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="depth 21 is not 3N\\+2; valid: 5, 8, 11"):
        create_model("simplified_plain_21")
    with pytest.raises(ValueError, match="unknown init 'xavier'"):
        build_simplified(8, kind="plain", init="xavier")
    with pytest.raises(ValueError, match="unknown kind"):
        build_simplified(8, kind="highway")
