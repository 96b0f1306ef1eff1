"""Distributed checks of a session: what runs on several processes, in which mode, and notes on failures.

At ``attach`` on every rank: FSDP1 is refused, FSDP2 (sharded ``DTensor`` gradients) gets a
:class:`~gradlens.distributed.Reducer` and refuses probe-batch probes; whole gradients (one process or DDP) need
no reducer. When an exception leaves a session of several processes, :func:`failure_note` says which rank stopped
where, what became of the file, and whether the error came from a collective (a peer that died).
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence

import torch
from torch import nn

from gradlens.distributed import RankFailure, Reducer, Topology, fsdp1_modules, sharded_parameters
from gradlens.probes.base import PROBE_BATCH, Probe


def distributed_checks(
    model: nn.Module, probes: Sequence[Probe], topology: Topology, timeout: datetime.timedelta | float
) -> Reducer | None:
    """The reducer for sharded (FSDP2) gradients, or None; refuses what cannot run on several processes."""
    if isinstance(timeout, int | float) and not isinstance(timeout, bool):
        timeout = datetime.timedelta(seconds=float(timeout))
    legacy = fsdp1_modules(model)
    if legacy:
        raise ValueError(
            f"module {legacy[0] or type(model).__name__!r} is wrapped in FullyShardedDataParallel (FSDP1): "
            "its gradients are shards of flat parameters that gradlens cannot attribute to parameters; shard "
            "with torch.distributed.fsdp.fully_shard (FSDP2), whose DTensor gradients gradlens combines exactly"
        )
    sharded = sharded_parameters(model)
    if not sharded:
        Reducer(topology, timeout)  # validates the timeout the same way in every mode
        return None
    batch_probes = [p.name for p in probes if PROBE_BATCH in p.needs]
    if batch_probes:
        raise ValueError(
            f"probes {batch_probes} evaluate the model on a probe batch, which gradlens does not run under "
            f"FSDP2 (fully_shard; {len(sharded)} sharded parameters, e.g. {sharded[0]!r}): the forward of a "
            "sharded model all-gathers parameters on every rank, and gradlens runs probe-batch probes on the "
            "writer rank only, so the other ranks would never join; measure them on a single-process or DDP "
            "run of the same network, or attach without them"
        )
    return Reducer(topology, timeout)


def distributed_mode(topology: Topology, reducer: Reducer | None) -> str:
    """``"single"`` (one process), ``"ddp"`` (several, whole gradients on every rank) or ``"fsdp2"``."""
    if reducer is not None:
        return "fsdp2"
    return "ddp" if topology.distributed else "single"


def failure_note(topology: Topology, step: int, path: str, error: BaseException) -> str:
    """The note added to an exception leaving a session of several processes: which rank stopped at which step,
    what became of the file, and, for an error of a collective, that another rank probably died."""
    note = f"gradlens: {topology.describe()} stopped at step {step}; " + (
        f"{path} is closed with status 'failed' and keeps every record flushed before"
        if topology.is_writer
        else f"rank {topology.writer_rank} writes {path}"
    )
    if from_collective(error):
        note += (
            ". The error comes from a collective: another rank has probably died or stopped responding; "
            "the first error is in that rank's log"
        )
    return note


def from_collective(error: BaseException) -> bool:
    """True for errors of torch.distributed's collectives (a peer that died closes its connections)."""
    if isinstance(error, (RankFailure, getattr(torch.distributed, "DistError", RankFailure))):
        return True
    text = str(error)
    return any(mark in text for mark in ("gloo", "NCCL", "Connection closed by peer", "Connection reset by peer"))
