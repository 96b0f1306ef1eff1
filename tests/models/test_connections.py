"""Connection markers: each merge against its formula, switching, sources."""

import torch
from torch import nn

from gradlens.models.connections import ConcatSkip, GatedSkip, IdentitySkip, LongSkip, set_skips_enabled

G = torch.Generator().manual_seed(0)
X, FX, T = (torch.randn(2, 3, generator=G, dtype=torch.float64) for _ in range(3))


def test_identity_and_gated_skip() -> None:
    skip = IdentitySkip(source="a")
    torch.testing.assert_close(skip(X, FX), X + FX)
    skip.enabled = False
    torch.testing.assert_close(skip(X, FX), FX)
    t = torch.sigmoid(T)
    torch.testing.assert_close(GatedSkip("a")(X, FX, t), t * FX + (1 - t) * X)
    assert skip.source == "a" and skip.sources == ("a",)


def test_concat_and_long_skip_feed_zeros_when_disabled() -> None:
    concat = ConcatSkip(dim=1, source=["s1", "s2"])
    assert concat.sources == ("s1", "s2") and concat.source == "s1"
    out = concat(X, FX, T)
    torch.testing.assert_close(out, torch.cat([X, FX, T], dim=1))
    concat.enabled = False
    zeros = torch.zeros(2, 6, dtype=torch.float64)
    torch.testing.assert_close(concat(X, FX, T), torch.cat([X, zeros], dim=1))
    long = LongSkip(dim=1, source="enc1")
    torch.testing.assert_close(long(X, FX), torch.cat([X, FX], dim=1))
    long.enabled = False
    torch.testing.assert_close(long(X, FX)[:, 3:], torch.zeros(2, 3, dtype=torch.float64))


def test_set_skips_enabled_by_kind() -> None:
    net = nn.ModuleDict({"a": IdentitySkip(), "b": ConcatSkip(), "c": LongSkip(), "d": GatedSkip()})
    assert set_skips_enabled(net, False, (ConcatSkip,)) == 1
    assert not net["b"].enabled and net["a"].enabled
    assert set_skips_enabled(net, False) == 3  # GatedSkip has no switch
