"""ResNet-v1 for CIFAR (He et al. 2016) and its plain counterpart."""

import pytest
import torch
import torch.nn.functional as F

from gradlens.models import create_model
from gradlens.models.connections import IdentitySkip
from gradlens.models.resnet_v1 import BasicBlock, ZeroPadShortcut, build_resnet_v1


def closed_form_count(depth: int, num_classes: int = 10, in_channels: int = 3) -> int:
    """Parameters of ResNet-v1: 3×3 convs without bias, BN (γ, β) per conv, fc with bias."""
    n = (depth - 2) // 6
    total = 9 * in_channels * 16 + 2 * 16
    c_in = 16
    for c in (16, 32, 64):
        for _ in range(n):
            total += 9 * c_in * c + 2 * c + 9 * c * c + 2 * c
            c_in = c
    return total + 64 * num_classes + num_classes


@pytest.mark.parametrize(("depth", "millions"), [(20, 0.27), (32, 0.46), (44, 0.66), (56, 0.85)])
def test_parameter_counts_match_he_et_al(depth: int, millions: float) -> None:
    for plain in (False, True):
        count = sum(p.numel() for p in build_resnet_v1(depth, plain=plain).parameters())
        assert count == closed_form_count(depth)
        assert round(count / 1e6, 2) == millions


def test_depth_counts_weight_layers_and_blocks() -> None:
    model = create_model("resnet_v1_20")
    spec = model.gradlens_spec()
    assert len(spec.layers) == 20  # 6n + 2 weight layers
    assert len(model.blocks) == 9 and spec.blocks[4] == "stage2.1"  # the 5th of 9 blocks (document 004)
    assert model.blocks[4] is model.stage2[1]


def test_option_a_shortcut_is_parameter_free_zero_pad() -> None:
    shortcut = ZeroPadShortcut(16, 32, 2)
    assert list(shortcut.parameters()) == [] and list(shortcut.buffers()) == []
    x = torch.randn(2, 16, 8, 8, dtype=torch.float64)
    y = shortcut(x)
    assert y.shape == (2, 32, 4, 4)
    expected = torch.zeros(2, 32, 4, 4, dtype=torch.float64)
    for c in range(16):
        for i in range(4):
            for j in range(4):
                expected[:, c, i, j] = x[:, c, 2 * i, 2 * j]
    assert torch.equal(y, expected)


@pytest.mark.parametrize(("c_in", "c_out", "stride"), [(16, 16, 1), (16, 32, 2)])
def test_residual_block_is_plain_block_plus_shortcut(c_in: int, c_out: int, stride: int) -> None:
    torch.manual_seed(0)
    residual = BasicBlock(c_in, c_out, stride, plain=False).double()
    plain = BasicBlock(c_in, c_out, stride, plain=True).double()
    plain.load_state_dict(residual.state_dict())
    seen = {}
    plain.bn2.register_forward_hook(lambda m, i, o: seen.setdefault("pre", o))
    x = torch.randn(3, c_in, 8, 8, dtype=torch.float64)
    plain_out = plain(x)
    identity = F.pad(x[:, :, ::stride, ::stride], (0, 0, 0, 0, 0, c_out - c_in))
    torch.testing.assert_close(residual(x), torch.relu(seen["pre"] + identity), rtol=0, atol=1e-14)
    torch.testing.assert_close(plain_out, torch.relu(seen["pre"]), rtol=0, atol=0)


def test_plain_counterpart_has_same_layers_without_identity() -> None:
    resnet, plain = create_model("resnet_v1_8"), create_model("plain_v1_8")
    shapes = {k: v.shape for k, v in resnet.state_dict().items()}
    assert shapes == {k: v.shape for k, v in plain.state_dict().items()}
    assert not any(isinstance(m, IdentitySkip) for m in plain.modules())
    skips = {n: m for n, m in resnet.named_modules() if isinstance(m, IdentitySkip)}
    assert list(skips) == ["stage1.0.skip", "stage2.0.skip", "stage3.0.skip"]
    assert [m.source for m in skips.values()] == ["relu", "stage1.0.relu", "stage2.0.relu"]
    # Same weights: the outputs differ only through the identity.
    plain.load_state_dict(resnet.state_dict())
    x = resnet.example_input(2, torch.Generator().manual_seed(0))
    assert not torch.allclose(resnet(x), plain(x))


def test_mnist_input_and_bad_options() -> None:
    model = build_resnet_v1(8, in_channels=1, image_size=28, num_classes=7)
    assert model(model.example_input(2)).shape == (2, 7)
    with pytest.raises(ValueError, match="depth 21 is not 6n\\+2; valid: 8, 14, 20"):
        create_model("resnet_v1_21")
    with pytest.raises(ValueError, match="valid: 8, 14, 20"):
        create_model("plain_v1_2")
    with pytest.raises(ValueError, match="in_channels"):
        build_resnet_v1(20, in_channels=0)
