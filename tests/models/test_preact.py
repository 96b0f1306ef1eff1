"""The 8n+2 residual network of document 002 in its plain, resnet, van and van0 variants."""

import pytest
import torch

from gradlens.models import create_model
from gradlens.models.connections import IdentitySkip
from gradlens.models.preact import PreactLayer, build_preact
from gradlens.models.resnet_v1 import ZeroPadShortcut
from gradlens.models.van import VANSkip, VANUpdate, split_van_parameters


@pytest.mark.parametrize("depth", [10, 18, 26])
def test_depth_is_8n_plus_2_weight_layers(depth: int) -> None:
    model = build_preact(depth, variant="resnet")
    spec = model.gradlens_spec()
    assert len(spec.layers) == depth and len(model.blocks) == 4 * ((depth - 2) // 8)
    firsts = [model.get_submodule(f"stage{s}.0") for s in range(1, 5)]
    assert [b.conv1.stride[0] for b in firsts] == [1, 2, 2, 2]  # downsampling at blocks 2, 3, 4
    assert [b.conv2.out_channels for b in firsts] == [16, 32, 64, 128]


def test_layer_formula_per_variant() -> None:
    torch.manual_seed(0)
    layers = {v: PreactLayer(4, 8, 2, v, alpha_init=0.0).double() for v in ("plain", "resnet", "van")}
    state = layers["plain"].state_dict()
    layers["resnet"].load_state_dict(state)
    alpha = torch.rand(8, 1, 1, dtype=torch.float64)
    layers["van"].load_state_dict({**state, "skip.alpha": alpha})
    x = torch.randn(3, 4, 6, 6, dtype=torch.float64)
    f = layers["plain"]
    fx = f.relu2(f.bn2(f.conv2(f.relu1(f.bn1(f.conv1(x))))))  # conv-BN-ReLU-conv-BN-ReLU
    assert torch.equal(layers["plain"](x), fx)
    x_tilde = torch.cat([x[:, :, ::2, ::2], torch.zeros(3, 4, 3, 3, dtype=torch.float64)], dim=1)
    torch.testing.assert_close(layers["resnet"](x), fx + x_tilde, rtol=0, atol=1e-15)
    torch.testing.assert_close(layers["van"](x), fx + (1 - alpha) * x_tilde, rtol=0, atol=1e-15)
    assert isinstance(layers["van"].shortcut, ZeroPadShortcut)


def test_van_interpolates_between_resnet_and_plain() -> None:
    torch.manual_seed(0)
    van = build_preact(10, variant="van").double()
    resnet = build_preact(10, variant="resnet").double()
    plain = build_preact(10, variant="plain").double()
    weights = {k: v for k, v in van.state_dict().items() if not k.endswith("alpha")}
    resnet.load_state_dict(weights)
    plain.load_state_dict(weights)
    x = van.example_input(3, torch.Generator().manual_seed(0))
    torch.testing.assert_close(van(x), resnet(x), rtol=0, atol=1e-13)  # α = 0 initially: a ResNet
    for _, skip in van.named_modules():
        if isinstance(skip, VANSkip):
            skip.alpha.data.fill_(1.0)
    torch.testing.assert_close(van(x), plain(x), rtol=0, atol=1e-13)  # α = 1: the skips are gone


def test_skips_markers_sources_and_van0_flag() -> None:
    van, van0, resnet = (create_model(f"preact_{v}_18") for v in ("van", "van0", "resnet"))
    skips = [(n, m) for n, m in van.named_modules() if isinstance(m, VANSkip)]
    assert len(skips) == 8 and skips[0][1].source == "relu" and skips[1][1].source == "stage1.0.out"
    assert skips[2][1].alpha.shape == (32, 1, 1)
    assert sum(isinstance(m, IdentitySkip) for m in resnet.modules()) == 8
    assert (van.van_lambda_zero, van0.van_lambda_zero, resnet.van_lambda_zero) == (False, True, False)
    shapes = {k: v.shape for k, v in van.state_dict().items()}
    assert shapes == {k: v.shape for k, v in van0.state_dict().items()}
    update = VANUpdate(van0, lr=0.1, lambda_zero=van0.van_lambda_zero)
    weights, alphas = split_van_parameters(van0)
    assert len(alphas) == 8 and len(weights) + 8 == len(list(van0.parameters()))
    update.step()
    assert all(torch.all(lam == 0) for lam in update.multipliers.values())


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="depth 20 is not 8n\\+2; valid: 10, 18, 26"):
        create_model("preact_van_20")
    with pytest.raises(ValueError, match="unknown variant 'highway'"):
        build_preact(10, variant="highway")
    with pytest.raises(KeyError, match="preact_van_10"):
        create_model("preact_vam_10")
