"""Document 003 MLPs with dense skips: widths, explicit forward, disabled skips == vanilla, skip*."""

import pytest
import torch

from gradlens.models import create_model
from gradlens.models.connections import ConcatSkip


def build(name: str, **kw: object) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(name, **kw).double()


def test_widths_emnist_and_cifar() -> None:
    m = build("concat_mlp_emnist_skip_4")
    assert [getattr(m, f"fc{j}").in_features for j in range(1, 5)] == [784, 128, 256 + 128, 256 + 128 + 256]
    assert [getattr(m, f"fc{j}").out_features for j in range(1, 5)] == [128, 256, 256, 26]
    assert m.skip_sources == {3: (1,), 4: (1, 2)}
    assert m.concat4.sources == ("relu1", "relu2")
    c = build("concat_mlp_cifar_skip_3")
    assert [getattr(c, f"fc{j}").in_features for j in range(1, 4)] == [3072, 512, 256 + 512]
    assert c.fc3.out_features == 10 and c.input_shape == (3, 32, 32)
    v = build("concat_mlp_emnist_vanilla_4")
    assert [getattr(v, f"fc{j}").in_features for j in range(1, 5)] == [784, 128, 256, 256]
    assert not any(isinstance(x, ConcatSkip) for x in v.modules())
    i = build("concat_mlp_emnist_skip_3", include_input=True)
    assert i.skip_sources == {2: (0,), 3: (0, 1)} and i.fc3.in_features == 256 + 784 + 128


def test_forward_is_sum_of_full_connections() -> None:
    m = build("concat_mlp_emnist_skip_4")
    x = m.example_input(3, torch.Generator().manual_seed(0))
    a = [x.flatten(1)]
    widths = m.widths
    for j in range(1, 5):
        fc = getattr(m, f"fc{j}")
        # z_j = W_j a_{j-1} + Σ_i W_{i→j} a_i + b_j, column blocks in the order [a_{j-1}, a_i ...]
        z = a[j - 1] @ fc.weight[:, : widths[j - 1]].T + fc.bias
        start = widths[j - 1]
        for i in m.skip_sources.get(j, ()):
            z = z + a[i] @ fc.weight[:, start : start + widths[i]].T
            start += widths[i]
        a.append(torch.relu(z) if j < 4 else z)
    torch.testing.assert_close(m(x), a[-1], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("layers", [3, 4])
def test_disabled_skips_equal_the_vanilla_function(layers: int) -> None:
    skip = build(f"concat_mlp_emnist_skip_{layers}", skips_enabled=False)
    vanilla = build(f"concat_mlp_emnist_vanilla_{layers}")
    with torch.no_grad():
        for j in range(1, layers + 1):
            fc_s, fc_v = getattr(skip, f"fc{j}"), getattr(vanilla, f"fc{j}")
            fc_v.weight.copy_(fc_s.weight[:, : fc_v.in_features])
            fc_v.bias.copy_(fc_s.bias)
    x = skip.example_input(4, torch.Generator().manual_seed(1))
    torch.testing.assert_close(skip(x), vanilla(x), rtol=1e-12, atol=1e-12)
    # the skip columns get no gradient while disabled
    skip(x).sum().backward()
    assert torch.count_nonzero(skip.fc3.weight.grad[:, 256:]) == 0


def test_skip_star_enable_restores_the_skip_net() -> None:
    enabled = build("concat_mlp_cifar_skip_4")
    staged = build("concat_mlp_cifar_skip_4", skips_enabled=False)
    x = enabled.example_input(2, torch.Generator().manual_seed(2))
    assert not torch.allclose(staged(x), enabled(x))
    staged.set_skips_enabled(True)
    assert all(s.enabled for s in staged.modules() if isinstance(s, ConcatSkip))
    torch.testing.assert_close(staged(x), enabled(x), rtol=0, atol=0)


def test_bad_options() -> None:
    with pytest.raises(ValueError, match="valid: 3, 4"):
        create_model("concat_mlp_emnist_skip_5")
    with pytest.raises(ValueError, match="skip variant"):
        create_model("concat_mlp_emnist_vanilla_3", include_input=True)
