"""The session's multi-process rules that a single process can check: refusals at attach, the recorded topology."""

from __future__ import annotations

import datetime

import pytest
import torch
from torch import nn

import gradlens
from gradlens.distributed import NullRecorder
from gradlens.probes import GradStats


def model_and_optimizer():
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    return model, torch.optim.SGD(model.parameters(), lr=0.1)


def test_a_single_process_records_its_topology(tmp_path):
    model, optimizer = model_and_optimizer()
    with gradlens.attach(model, optimizer, tmp_path / "run.h5", probes=[GradStats()]) as session:
        assert session.topology.rank == 0 and not session.topology.distributed
        model(torch.randn(2, 3)).sum().backward()
        optimizer.step()
        assert session.context.reducer is None
    meta = gradlens.load(tmp_path / "run.h5").meta
    assert meta["distributed"] == {"world_size": 1, "backend": None, "writer_rank": 0, "mode": "single"}


def test_bad_distributed_arguments_are_refused_before_any_file(tmp_path):
    model, optimizer = model_and_optimizer()
    path = tmp_path / "run.h5"
    with pytest.raises(
        ValueError, match=r"writer_rank=1 is not a rank of this run \(world size 1\); pass an int in 0..0"
    ):
        gradlens.attach(model, optimizer, path, probes=[GradStats()], writer_rank=1)
    with pytest.raises(ValueError, match="timeout must be a positive datetime.timedelta"):
        gradlens.attach(model, optimizer, path, probes=[GradStats()], collective_timeout=-1)
    assert not path.exists() and not (tmp_path / "run.h5.lock").exists()
    # seconds and timedeltas are both accepted
    gradlens.attach(model, optimizer, path, probes=[GradStats()], collective_timeout=30).close()
    gradlens.attach(model, optimizer, tmp_path / "b.h5", collective_timeout=datetime.timedelta(seconds=9)).close()


def test_fsdp1_is_refused_with_the_fix(tmp_path):
    from torch.distributed.fsdp import FullyShardedDataParallel

    # FSDP1 cannot be built without an accelerator: a stand-in instance of the class (no __init__) is enough to
    # check the refusal, which looks for FullyShardedDataParallel modules
    stand_in = FullyShardedDataParallel.__new__(FullyShardedDataParallel)
    nn.Module.__init__(stand_in)
    model, optimizer = model_and_optimizer()
    model.add_module("wrapped", stand_in)
    with pytest.raises(ValueError, match=r"module 'wrapped' is wrapped in FullyShardedDataParallel \(FSDP1\)"):
        gradlens.attach(model, optimizer, tmp_path / "run.h5", probes=[GradStats()])
    assert not (tmp_path / "run.h5").exists()


def test_null_recorder_accepts_everything_and_writes_nothing(tmp_path):
    recorder = NullRecorder(str(tmp_path / "run.h5"), rank=1)
    recorder.start([], {})
    recorder.record("grad_stats", 0, {"norm": torch.ones(2)})
    recorder.log_scalars(0, loss=1.0)
    recorder.log_event(0, "warning", "session", "x")
    recorder.flush()
    recorder.close("failed")
    assert recorder.closed and list(tmp_path.iterdir()) == []
    assert "rank 1 does not write" in repr(recorder)
