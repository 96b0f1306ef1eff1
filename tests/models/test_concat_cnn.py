"""Document 003's CNN (Figure 2): max-pool + concatenation skips, vanilla and reinforced twins."""

import pytest
import torch
import torch.nn.functional as F

from gradlens.models import create_model
from gradlens.models.concat_cnn import build_concat_cnn
from gradlens.models.connections import ConcatSkip


def layer_outputs(model, x):
    seen = {}
    handles = [
        m.register_forward_hook(lambda mod, i, o, name=name: seen.setdefault(name, o))
        for name, m in model.named_children()
    ]
    out = model(x)
    for handle in handles:
        handle.remove()
    return out, seen


def test_shapes_of_section_2_3() -> None:
    model = create_model("concat_cnn_skip")
    _, seen = layer_outputs(model, model.example_input(2))
    assert seen["layer1"].shape == (2, 32, 32, 32)  # [32, 32, 32] in the document's H, W, C
    assert seen["skip4_pool"].shape == (2, 32, 16, 16)
    assert seen["layer4"].shape == (2, 64, 16, 16) and seen["skip4"].shape == (2, 96, 16, 16)
    assert seen["skip5"].shape == (2, 96, 16, 16)
    assert seen["skip7"].shape == (2, 224, 8, 8) and seen["skip8"].shape == (2, 224, 8, 8)
    sources = {n: m.source for n, m in model.named_modules() if isinstance(m, ConcatSkip)}
    assert sources == {"skip4": "layer1", "skip5": "layer2", "skip7": "skip4", "skip8": "skip5"}
    # The skipped part is the 2×2 max-pool of the source tensor, after the main-path channels.
    torch.testing.assert_close(seen["skip4"][:, 64:], F.max_pool2d(seen["layer1"], 2), rtol=0, atol=0)
    torch.testing.assert_close(seen["skip7"][:, 128:], F.max_pool2d(seen["skip4"], 2), rtol=0, atol=0)
    torch.testing.assert_close(seen["skip7"][:, :128], seen["layer7"], rtol=0, atol=0)


def test_vanilla_and_reinforced_widths() -> None:
    widths = {}
    for variant in ("vanilla", "reinforced"):
        model = create_model(f"concat_cnn_{variant}")
        widths[variant] = [model.get_submodule(f"layer{k}.conv").out_channels for k in (1, 2, 4, 5, 7, 8)]
        assert not any(isinstance(m, ConcatSkip) for m in model.modules())
    assert widths == {"vanilla": [32, 32, 64, 64, 128, 128], "reinforced": [32, 32, 96, 96, 224, 224]}


def test_disabled_skips_compute_the_vanilla_cnn_then_can_be_enabled() -> None:
    torch.manual_seed(0)
    skip = build_concat_cnn("skip", skips_enabled=False).double()
    vanilla = build_concat_cnn("vanilla").double()
    # The vanilla weights are the skip model's weights on the main-path input channels.
    state = skip.state_dict()
    main_inputs = {"layer5": 64, "layer7": 64, "layer8": 128}
    copied = {}
    for key in vanilla.state_dict():
        layer = key.split(".")[0]
        if key.endswith("conv.weight") and layer in main_inputs:
            copied[key] = state[key][:, : main_inputs[layer]]
        elif key == "fc.weight":
            copied[key] = state[key].reshape(10, 224, 4, 4)[:, :128].reshape(10, -1)
        else:
            copied[key] = state[key]
    vanilla.load_state_dict(copied)
    x = skip.example_input(3, torch.Generator().manual_seed(0))
    torch.testing.assert_close(skip(x), vanilla(x), rtol=1e-12, atol=1e-14)
    # While disabled, the weights reading the (zero) skip channels get zero gradient.
    skip(x).square().sum().backward()
    assert torch.all(skip.layer5.conv.weight.grad[:, 64:] == 0)
    assert torch.any(skip.layer5.conv.weight.grad[:, :64] != 0)
    skip.set_skips_enabled(True)
    assert not torch.allclose(skip(x), vanilla(x))
    with pytest.raises(ValueError, match="no skips to switch"):
        vanilla.set_skips_enabled(True)


def test_mnist_input_and_bad_input() -> None:
    model = build_concat_cnn("skip", in_channels=1, image_size=28, num_classes=26)
    assert model(model.example_input(2)).shape == (2, 26)
    with pytest.raises(ValueError, match="unknown variant 'dense'"):
        build_concat_cnn("dense")
    with pytest.raises(ValueError, match="image_size must be >= 8"):
        build_concat_cnn("skip", image_size=4)
    with pytest.raises(ValueError, match="skips_enabled=False needs variant 'skip'"):
        build_concat_cnn("vanilla", skips_enabled=False)
