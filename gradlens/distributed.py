"""Runs on several processes: who writes the file, and how statistics of sharded gradients are combined.

gradlens follows ``torch.distributed``: when a process group is initialised (torchrun, Lightning's and the
Hugging Face Trainer's DDP, FSDP2), :func:`topology` reports this process's rank, the world size and the
backend; otherwise the run is a single process (rank 0 of 1).

- **One writer.** ``attach`` is called on every rank with the same arguments; only the writer rank (0 by
  default) creates, locks and writes the file. The other ranks get a :class:`NullRecorder` that accepts
  every record and writes nothing.
- **DDP** averages gradients before ``optimizer.step()``, so every rank holds the full, identical
  gradient: probes run on the writer only, through the unwrapped module (:func:`unwrap_data_parallel`),
  and issue no collective the other ranks would have to join.
- **FSDP2** (``torch.distributed.fsdp.fully_shard``) leaves each rank one shard of every gradient, a
  ``DTensor``. A statistic of a shard is not the statistic of the parameter (a norm of 0.40 on rank 0 and
  0.46 on rank 1 where the true norm is 0.61). Probes compute *sums* over their :meth:`Reducer.local`
  part of each gradient (Σg, Σ|g|, Σg², n, non-finite counts, histogram counts; max|g|), pack them into
  one flat tensor per reduction and call :meth:`Reducer.sum_` / :meth:`Reducer.max_` once per firing;
  after that every rank holds the statistics of the whole gradient.

A collective that fails or gets no answer within the reducer's timeout (a rank died or hangs) raises
:class:`RankFailure`, which names this rank, the world, the backend and what was being reduced, so the
surviving ranks stop with that message instead of waiting forever.
"""

from __future__ import annotations

import datetime
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

DEFAULT_TIMEOUT = datetime.timedelta(minutes=5)


@dataclass(frozen=True)
class Topology:
    """Where this process sits in the run.

    Attributes:
        rank: this process's rank in the default process group (0 for a single process).
        world_size: the number of processes (1 for a single process).
        backend: the process group's backend (``"gloo"``, ``"nccl"``, ...) or None for a single process.
        writer_rank: the rank that writes the file.
    """

    rank: int
    world_size: int
    backend: str | None
    writer_rank: int

    @property
    def distributed(self) -> bool:
        """True when more than one process takes part."""
        return self.world_size > 1

    @property
    def is_writer(self) -> bool:
        """True on the rank that writes the file."""
        return self.rank == self.writer_rank

    def meta(self) -> dict:
        """What the file records about the run's processes."""
        return {"world_size": self.world_size, "backend": self.backend, "writer_rank": self.writer_rank}

    def describe(self) -> str:
        """``rank 0 of 2 (gloo)``, for messages."""
        return f"rank {self.rank} of {self.world_size} ({self.backend or 'single process'})"


def topology(writer_rank: int = 0) -> Topology:
    """This process's rank, the world size and the backend of the default ``torch.distributed`` group.

    Args:
        writer_rank: the rank that writes the file; must be one of the run's ranks.
    """
    if dist.is_available() and dist.is_initialized():
        rank, world, backend = dist.get_rank(), dist.get_world_size(), str(dist.get_backend())
    else:
        rank, world, backend = 0, 1, None
    if isinstance(writer_rank, bool) or not isinstance(writer_rank, int) or not 0 <= writer_rank < world:
        raise ValueError(
            f"writer_rank={writer_rank!r} is not a rank of this run (world size {world}); pass an int in 0..{world - 1}"
        )
    return Topology(rank, world, backend, writer_rank)


def unwrap_data_parallel(model: nn.Module) -> nn.Module:
    """The module inside ``DistributedDataParallel`` / ``DataParallel`` wrappers (the model itself otherwise).

    Probes that evaluate a probe batch call this module: a forward of the DDP wrapper would broadcast buffers
    and prepare a gradient all-reduce that only the writer rank would join.
    """
    while isinstance(model, nn.parallel.DistributedDataParallel | nn.DataParallel):
        model = model.module
    return model


def _dtensor_types() -> tuple[type, type, type] | None:
    # No DTensor can exist before torch.distributed.tensor is imported (FSDP2 imports it); importing it here
    # would cost every single-process attach a second or two.
    if not dist.is_available() or "torch.distributed.tensor" not in sys.modules:
        return None
    from torch.distributed.tensor import DTensor, Replicate, Shard

    return DTensor, Shard, Replicate


def is_sharded(tensor: torch.Tensor | None) -> bool:
    """True for a ``DTensor`` split across ranks (any ``Shard`` placement), e.g. an FSDP2 parameter or gradient."""
    types = _dtensor_types()
    if types is None or tensor is None:
        return False
    dtensor, shard, _ = types
    return isinstance(tensor, dtensor) and any(isinstance(p, shard) for p in tensor.placements)


def sharded_parameters(model: nn.Module) -> list[str]:
    """Names of the parameters of ``model`` that are sharded across ranks (FSDP2)."""
    return [name for name, p in model.named_parameters() if is_sharded(p)]


def fsdp1_modules(model: nn.Module) -> list[str]:
    """Names of the ``FullyShardedDataParallel`` (FSDP1) wrappers inside ``model`` (``""`` for the root)."""
    if "torch.distributed.fsdp" not in sys.modules:  # never imported: nothing can be wrapped (and no import cost)
        return []
    from torch.distributed.fsdp import FullyShardedDataParallel

    return [name for name, module in model.named_modules() if isinstance(module, FullyShardedDataParallel)]


class RankFailure(RuntimeError):
    """A collective gradlens issued failed or timed out: another rank died or stopped responding.

    Never swallowed as a probe failure: the run cannot go on once a rank is gone.
    """


class Reducer:
    """In-place all-reduce of packed per-parameter sums, so statistics of sharded gradients are exact.

    A probe calls :meth:`local` for each gradient, computes sums over the returned tensor, packs all sums of
    one kind of reduction into one flat float64 tensor and calls :meth:`sum_` (or :meth:`max_`) once per
    firing; afterwards every rank holds, for each parameter, the sum (or max) over the whole gradient. Every
    rank must make the same calls in the same order, which the session guarantees by running gradient probes
    on every rank of an FSDP2 run.

    Args:
        topology: where this process sits (see :func:`topology`).
        timeout: how long a collective may wait for the other ranks before :class:`RankFailure` is raised.
        group: the process group (None: the default group, which must span every rank of the mesh).
    """

    def __init__(
        self,
        topology: Topology,
        timeout: datetime.timedelta = DEFAULT_TIMEOUT,
        group: dist.ProcessGroup | None = None,
    ) -> None:
        if not isinstance(timeout, datetime.timedelta) or timeout.total_seconds() <= 0:
            raise ValueError(f"timeout must be a positive datetime.timedelta, got {timeout!r}")
        self.topology = topology
        self.timeout = timeout
        self.group = group
        self.collectives = 0  # how many collectives this reducer issued (one per reduction call)

    def sum_(self, tensor: torch.Tensor, what: str = "statistics") -> torch.Tensor:
        """Replace ``tensor`` by its sum over all ranks, in place; returns it.

        Counts (n, non-finite entries, histogram counts) packed as float64 stay exact up to 2**53.
        """
        return self._all_reduce(tensor, dist.ReduceOp.SUM, what)

    def max_(self, tensor: torch.Tensor, what: str = "statistics") -> torch.Tensor:
        """Replace ``tensor`` by its element-wise maximum over all ranks, in place; returns it.

        Use it for max|g| with 0 for an empty shard. The maximum of NaN is not defined across backends: take
        max|g| as non-finite where the summed non-finite count is positive.
        """
        return self._all_reduce(tensor, dist.ReduceOp.MAX, what)

    def _all_reduce(self, tensor: torch.Tensor, op: dist.ReduceOp, what: str) -> torch.Tensor:
        types = _dtensor_types()
        if not isinstance(tensor, torch.Tensor) or (types is not None and isinstance(tensor, types[0])):
            raise TypeError(f"Reducer takes one plain packed torch.Tensor, got {type(tensor).__name__}")
        if not self.topology.distributed:
            return tensor
        self.collectives += 1
        try:
            work = dist.all_reduce(tensor, op=op, group=self.group, async_op=True)
            work.wait(timeout=self.timeout)
        except Exception as error:  # gloo/nccl raise RuntimeError subclasses with transport details
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise RankFailure(
                f"gradlens: the all-reduce of {what} failed on {self.topology.describe()}: another rank has "
                f"probably died, or did not join within {self.timeout.total_seconds():g} s (under FSDP2 every rank "
                f"must attach) ({type(error).__name__}: {first[:300]}); the run cannot continue, check the other "
                "ranks' logs"
            ) from error
        return tensor

    def local(self, grad: torch.Tensor) -> tuple[torch.Tensor, bool]:
        """The part of ``grad`` this rank contributes, and whether ``grad`` is sharded.

        Sums over the returned tensors of all ranks equal sums over the whole gradient:

        - a sharded ``DTensor`` (FSDP2): this rank's local shard, possibly empty (uneven sharding);
          ``sharded`` is True. Mesh dimensions on which the tensor is replicated (HSDP) contribute only from
          their coordinate 0, so no entry is counted twice.
        - any other gradient (a plain tensor, a replicated ``DTensor``): every rank holds all of it, so the
          whole tensor on the writer rank and an empty tensor on the others; ``sharded`` is False.

        Returns:
            ``(tensor, sharded)``; ``tensor`` is a plain ``torch.Tensor`` (flattened view where possible).
        """
        types = _dtensor_types()
        if types is not None and isinstance(grad, types[0]):
            dtensor, shard, replicate = types
            local = grad.to_local()
            placements = grad.placements
            sharded = any(isinstance(p, shard) for p in placements)
            if not all(isinstance(p, shard | replicate) for p in placements):
                raise ValueError(
                    f"gradient with placements {placements} is neither sharded nor replicated (a pending "
                    "Partial sum); gradlens reads gradients after FSDP's reduce-scatter, at optimizer.step()"
                )
            coordinate = grad.device_mesh.get_coordinate() or []
            duplicate = any(isinstance(p, replicate) and c != 0 for p, c in zip(placements, coordinate, strict=False))
            if duplicate or (not sharded and not self.topology.is_writer):
                return local.reshape(-1)[:0], sharded
            return local.reshape(-1), sharded
        if self.topology.is_writer or not self.topology.distributed:
            return grad.reshape(-1), False
        return grad.reshape(-1)[:0], False

    def __repr__(self) -> str:
        return f"Reducer({self.topology.describe()}, timeout={self.timeout.total_seconds():g} s)"


class NullRecorder:
    """The recorder of a rank that does not write: accepts every call, touches no file.

    It has the :class:`gradlens.recorder.Recorder` methods the session calls; records are discarded.
    """

    def __init__(self, path: str, rank: int) -> None:
        self.path = path
        self.rank = rank
        self.closed = False

    def start(self, *args: object, **kwargs: object) -> None:
        """Discard the layer table and quantity declarations."""

    def record(self, *args: object, **kwargs: object) -> None:
        """Discard a probe record."""

    def log_scalars(self, *args: object, **kwargs: object) -> None:
        """Discard scalars."""

    def log_event(self, *args: object, **kwargs: object) -> None:
        """Discard an event."""

    def flush(self) -> None:
        """Nothing to flush."""

    def close(self, status: str = "finished") -> None:
        """Mark closed; no file to close."""
        self.closed = True

    def __repr__(self) -> str:
        return f"NullRecorder({self.path!r}, rank {self.rank} does not write)"
