"""Deterministic mini-batches: every sample once per epoch, replayable epochs, the global RNG untouched."""

from __future__ import annotations

import pytest
import torch

from gradlens.data import make_loader


def test_loader_is_deterministic_covers_every_sample_and_keeps_the_last_batch() -> None:
    x = torch.arange(23, dtype=torch.float64).reshape(23, 1) * 10
    y = torch.arange(23)
    rng_state = torch.get_rng_state()
    loader = make_loader(x, y, batch_size=5, shuffle=True, seed=7)
    epochs = [list(loader) for _ in range(3)]
    assert torch.equal(torch.get_rng_state(), rng_state)
    assert len(loader) == 5
    for batches in epochs:
        assert [len(b[1]) for b in batches] == [5, 5, 5, 5, 3]
        seen = torch.cat([b[1] for b in batches])
        assert sorted(seen.tolist()) == list(range(23))
        assert all(torch.equal(bx[:, 0], by.double() * 10) for bx, by in batches)
    orders = [torch.cat([b[1] for b in batches]) for batches in epochs]
    assert not torch.equal(orders[0], orders[1])
    replay = make_loader(x, y, batch_size=5, shuffle=True, seed=7)
    replay.set_epoch(2)
    assert torch.equal(torch.cat([b[1] for b in replay]), orders[2])
    assert torch.equal(replay.order(0), orders[0])
    assert not torch.equal(make_loader(x, y, 5, seed=8).order(0), orders[0])
    in_order = make_loader(x, y, batch_size=10, shuffle=False)
    assert [b[1].tolist() for b in in_order] == [list(range(10)), list(range(10, 20)), [20, 21, 22]]
    dropped = make_loader(x, y, batch_size=10, shuffle=False, drop_last=True)
    assert len(dropped) == 2 and [len(b[1]) for b in dropped] == [10, 10]


def test_loader_bad_arguments() -> None:
    x, y = torch.zeros(4, 2), torch.zeros(3)
    with pytest.raises(ValueError, match="x has 4 samples but y has 3"):
        make_loader(x, y, 2)
    with pytest.raises(ValueError, match="batch_size=0 must be a positive integer"):
        make_loader(x, torch.zeros(4), 0)
    with pytest.raises(ValueError, match=r"drop_last=True with batch_size=5 > 4 samples"):
        make_loader(x, torch.zeros(4), 5, drop_last=True)


