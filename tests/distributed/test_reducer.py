"""The Reducer on 2 gloo processes: sums of FSDP2 gradient shards equal the single-process sums."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gradlens.distributed import RankFailure, Reducer, topology
from tests.distributed import scenarios
from tests.distributed.harness import check, run_ranks


def test_fsdp2_shards_reduce_to_single_process_sums():
    ranks = check(run_ranks(scenarios.reduce_fsdp2_grads, 2))
    model = scenarios.tiny_mlp()
    x, y = scenarios.global_batch(0)
    nn.functional.cross_entropy(model(x), y).backward()
    grads = [p.grad for p in model.parameters()]
    expected = torch.tensor(
        [[g.sum(), g.abs().sum(), g.pow(2).sum(), g.numel(), 0.0] for g in grads], dtype=torch.float64
    )
    expected_max = torch.stack([g.abs().max() for g in grads])
    assert ranks[0]["names"] == [n for n, _ in model.named_parameters()]
    for value in ranks:
        assert all(value["sharded"])
        assert value["collectives"] == 2  # one per reduction: sums, maxima
        torch.testing.assert_close(value["sums"], expected, rtol=1e-12, atol=1e-15)
        torch.testing.assert_close(value["max"], expected_max, rtol=1e-12, atol=0)
    # the shards really are partial (4+3 rows, and an empty shard of the [1, 3] weight on rank 1)
    assert ranks[0]["local_n"].tolist() == [24, 4, 21, 3, 10, 2, 3, 2, 2]
    assert ranks[1]["local_n"].tolist() == [18, 3, 14, 2, 5, 1, 0, 1, 1]
    # a shard's own norm is not the parameter's norm (the √shards under-reporting bug)
    assert ranks[0]["local_n"][0] < expected[0, 3]


def test_whole_gradients_are_counted_once():
    ranks = check(run_ranks(scenarios.reduce_plain_tensor, 2))
    grad = torch.arange(12, dtype=torch.float64) - 5.5
    for value in ranks:
        assert value["sharded"] == [False]
        torch.testing.assert_close(
            value["sums"][0],
            torch.tensor([grad.sum(), grad.abs().sum(), grad.pow(2).sum(), 12.0, 0.0], dtype=torch.float64),
        )
        assert value["max"].item() == 5.5


def test_a_silent_rank_times_out_with_a_clear_error():
    rank0, rank1 = run_ranks(scenarios.reduce_with_silent_peer, 2, 1.0, deadline=120)
    assert rank0.error == "RankFailure"
    assert "all-reduce of grad_stats sums failed on rank 0 of 2 (gloo)" in rank0.message
    assert "did not join within 1 s" in rank0.message
    assert rank0.seconds < 60  # gives up (~2 s idle, with the group's start): a hang guard, not a speed claim


def test_a_dead_rank_stops_the_survivor_with_a_clear_error():
    rank0, rank1 = run_ranks(scenarios.reduce_with_dead_peer, 2, deadline=120)
    assert rank1.exitcode == 3
    assert rank0.error == "RankFailure"
    # at once, not after the reducer's timeout: that is 600 s, past the deadline (waiting would end in "Deadline")
    assert "another rank has probably died" in rank0.message


def test_single_process_reducer_is_the_identity():
    reducer = Reducer(topology())
    t = torch.tensor([1.0, -2.0])
    assert reducer.sum_(t) is t and t.tolist() == [1.0, -2.0]
    assert reducer.max_(t).tolist() == [1.0, -2.0]
    local, sharded = reducer.local(torch.ones(2, 3))
    assert local.shape == (6,) and not sharded
    assert reducer.collectives == 0


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match=r"writer_rank=1 is not a rank of this run \(world size 1\)"):
        topology(writer_rank=1)
    with pytest.raises(ValueError, match="timeout must be a positive datetime.timedelta"):
        Reducer(topology(), timeout=5)
    with pytest.raises(TypeError, match="one plain packed torch.Tensor"):
        Reducer(topology()).sum_([1.0])
    assert isinstance(RankFailure("x"), RuntimeError)
