"""Explainer nets (document 001): dense MLP forward, the sk-fig1 gradient contrast, dense block, U-Net."""

import pytest
import torch
from torch import nn

from gradlens.models import create_model
from gradlens.models.connections import LongSkip


def test_dense_mlp_forward_explicit() -> None:
    torch.manual_seed(0)
    m = create_model("explainer_dense_2", input_shape=4, width=3, growth=2).double()
    x = m.example_input(5, torch.Generator().manual_seed(0))

    def lin(layer: nn.Linear, h: torch.Tensor) -> torch.Tensor:
        return h @ layer.weight.T + layer.bias

    s = torch.relu(lin(m.stem, x))
    l0 = torch.relu(lin(m.layers[0].fc, s))
    l1 = torch.relu(lin(m.layers[1].fc, torch.cat([l0, s], 1)))
    torch.testing.assert_close(m(x), lin(m.head, torch.cat([l1, s, l0], 1)), rtol=1e-12, atol=1e-12)
    assert m.layers[0].concat is None and m.layers[1].concat.sources == ("stem_relu",)
    assert m.head_concat.sources == ("stem_relu", "layers.0.relu")


def grad_ratio(name: str) -> float:
    torch.manual_seed(0)
    model = create_model(name)
    gen = torch.Generator().manual_seed(0)
    x = model.example_input(128, gen)
    nn.functional.cross_entropy(model(x), torch.randint(10, (128,), generator=gen)).backward()
    layers = model.gradlens_spec().layer_names()[1:-1]
    modules = dict(model.named_modules())
    return (modules[layers[0]].weight.grad.norm() / modules[layers[-1]].weight.grad.norm()).item()


def test_sk_fig1_contrast_at_depth_30() -> None:
    assert grad_ratio("explainer_plain_30") < 1e-4
    assert grad_ratio("explainer_residual_30") > 1e-2
    assert grad_ratio("explainer_dense_30") > 1e-1


def test_dense_block_concatenates_its_input() -> None:
    torch.manual_seed(0)
    m = create_model("dense_block_3").double().eval()
    x = m.example_input(2, torch.Generator().manual_seed(0))
    stem = m.stem(x)
    out = m.block(stem)
    assert out.shape == (2, 16 + 3 * 8, 8, 8)
    # channel layout: [newest layer, block input, layer 0, layer 1]
    torch.testing.assert_close(out[:, 8:24], stem, rtol=0, atol=0)
    first = m.block.layers[0]
    torch.testing.assert_close(out[:, 24:32], first.conv(first.relu(first.bn(stem))))


def test_unet_logits_are_pooled_map_and_long_skips_matter() -> None:
    torch.manual_seed(0)
    m = create_model("unet_small", input_shape=(1, 16, 16)).double()
    x = m.example_input(2, torch.Generator().manual_seed(0))
    seg = m.segment(x)
    assert seg.shape == (2, *m.map_shape) == (2, 10, 16, 16)
    torch.testing.assert_close(m(x), seg.mean(dim=(2, 3)), rtol=1e-12, atol=1e-12)
    skips = [s for s in m.modules() if isinstance(s, LongSkip)]
    assert [s.source for s in skips] == ["enc2", "enc1"]
    # disabling the long skips == zeroing the decoder weights that read the encoder channels
    for s in skips:
        s.enabled = False
    off = m(x)
    with torch.no_grad():
        m.dec2.conv1.weight[:, 16:] = 0
        m.dec1.conv1.weight[:, 8:] = 0
    for s in skips:
        s.enabled = True
    torch.testing.assert_close(m(x), off, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="divisible by"):
        create_model("unet_small", input_shape=(1, 10, 10))
