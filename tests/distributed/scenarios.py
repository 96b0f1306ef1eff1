"""What each rank runs in the distributed tests (module-level functions, importable by the worker processes).

Every scenario builds its model and data from fixed seeds, so the single-process reference in the test
process can rebuild exactly the same ones with :func:`tiny_mlp` and :func:`global_batch`.
"""

from __future__ import annotations

import datetime
import os
import time

import torch
from torch import nn

GLOBAL_BATCH = 16


def tiny_mlp(dtype: torch.dtype = torch.float64) -> nn.Sequential:
    """6 → 7 → 5 → 3 with uneven shapes: on 2 ranks dim 0 splits 4+3 and 3+2, and a [1, 3] weight leaves rank 1
    an empty shard."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(6, 7),
        nn.Tanh(),
        nn.Linear(7, 5),
        nn.Tanh(),
        nn.Linear(5, 3),
        nn.Tanh(),
        nn.Linear(3, 1, bias=False),
        nn.Linear(1, 3),
    ).to(dtype)


def global_batch(step: int, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """The global batch of ``step`` (same on every rank and in the reference)."""
    generator = torch.Generator().manual_seed(1000 + step)
    x = torch.randn(GLOBAL_BATCH, 6, generator=generator, dtype=dtype)
    y = torch.randint(0, 3, (GLOBAL_BATCH,), generator=generator)
    return x, y


def rank_slice(rank: int, world: int) -> slice:
    per = GLOBAL_BATCH // world
    return slice(rank * per, (rank + 1) * per)


def _fsdp2(model: nn.Module, world: int) -> nn.Module:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh("cpu", (world,))
    for module in model:
        if isinstance(module, nn.Linear):
            fully_shard(module, mesh=mesh)
    return fully_shard(model, mesh=mesh)


def local_sums(grads: list[torch.Tensor], reducer) -> tuple[torch.Tensor, torch.Tensor, list[bool]]:
    """[P, 5] packed Σg, Σ|g|, Σg², n, non-finite count and [P] max|g| of each gradient's local part."""
    rows, maxima, sharded = [], [], []
    for grad in grads:
        local, is_sharded = reducer.local(grad)
        local = local.double()
        sharded.append(is_sharded)
        rows.append(
            torch.stack(
                [
                    local.sum(),
                    local.abs().sum(),
                    local.pow(2).sum(),
                    torch.tensor(float(local.numel()), dtype=torch.float64),
                    (~torch.isfinite(local)).sum().double(),
                ]
            )
        )
        maxima.append(local.abs().max() if local.numel() else torch.zeros((), dtype=torch.float64))
    return torch.stack(rows), torch.stack(maxima), sharded


def reduce_fsdp2_grads(rank: int, world: int) -> dict:
    """One FSDP2 backward on this rank's half of the global batch; the reducer's combined sums per parameter."""
    from gradlens.distributed import Reducer, topology

    model = _fsdp2(tiny_mlp(), world)
    x, y = global_batch(0)
    part = rank_slice(rank, world)
    nn.functional.cross_entropy(model(x[part]), y[part]).backward()
    reducer = Reducer(topology())
    sums, maxima, sharded = local_sums([p.grad for p in model.parameters()], reducer)
    local_n = sums[:, 3].clone()
    reducer.sum_(sums)
    reducer.max_(maxima)
    return {
        "names": [n for n, _ in model.named_parameters()],
        "sums": sums,
        "max": maxima,
        "sharded": sharded,
        "local_n": local_n,
        "collectives": reducer.collectives,
    }


def reduce_plain_tensor(rank: int, world: int) -> dict:
    """A gradient every rank holds whole (DDP, replicated): counted once, from the writer."""
    from gradlens.distributed import Reducer, topology

    grad = torch.arange(12, dtype=torch.float64).reshape(3, 4) - 5.5
    reducer = Reducer(topology())
    sums, maxima, sharded = local_sums([grad], reducer)
    reducer.sum_(sums)
    reducer.max_(maxima)
    return {"sums": sums, "max": maxima, "sharded": sharded}


def reduce_with_silent_peer(rank: int, world: int, timeout_s: float) -> dict:
    """Rank 1 never joins the all-reduce (it sleeps); rank 0 must give up after ``timeout_s``."""
    from gradlens.distributed import Reducer, topology

    if rank == 1:
        time.sleep(timeout_s + 1)
        return {}
    reducer = Reducer(topology(), timeout=datetime.timedelta(seconds=timeout_s))
    reducer.sum_(torch.ones(3, dtype=torch.float64), what="grad_stats sums")
    return {}


def reduce_with_dead_peer(rank: int, world: int) -> dict:
    """Rank 1 dies (os._exit) instead of joining the all-reduce; rank 0 must raise at once, not at its timeout."""
    from gradlens.distributed import Reducer, topology

    if rank == 1:
        time.sleep(0.5)
        os._exit(3)
    reducer = Reducer(topology(), timeout=datetime.timedelta(seconds=600))  # past the test's deadline
    reducer.sum_(torch.ones(3, dtype=torch.float64), what="grad_stats sums")
    return {}


def _train(model, optimizer, session, rank, world, steps, kill_at, die_after_backward=False):
    for step in range(steps):
        if step == kill_at and rank == 1 and not die_after_backward:
            os._exit(3)  # a crash before the step's forward
        x, y = global_batch(step)
        part = rank_slice(rank, world)
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x[part]), y[part])
        loss.backward()
        if step == kill_at and rank == 1:
            os._exit(3)  # a crash between backward and optimizer.step()
        optimizer.step()
        session.log(loss=loss.item())


CALLS: dict[str, list[str]] = {}  # probe name -> type of ctx.model at each compute, in this process


def counted(probe_class: type) -> type:
    """``probe_class`` whose computations are counted in CALLS (with the class of the model they saw)."""

    class Counted(probe_class):
        def compute(self, ctx):
            CALLS.setdefault(self.name, []).append(type(ctx.model).__name__)
            return super().compute(ctx)

    Counted.__name__ = probe_class.__name__
    return Counted


def probes_with_batch():
    from gradlens.probes import GradStats, LayerCushion

    return [counted(GradStats)(), counted(LayerCushion)()], global_batch(99)


def reference_session(path: str, steps: int) -> None:
    """The single-process run the distributed runs must reproduce: the global batch, the mean loss."""
    import gradlens

    model = tiny_mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    probes, probe_batch = probes_with_batch()
    with gradlens.attach(model, optimizer, path, probes=probes, probe_batch=probe_batch, flush_every=1) as session:
        _train(model, optimizer, session, 0, 1, steps, None)


def ddp_session(rank: int, world: int, path: str, steps: int, kill_at: int | None = None, writer_rank: int = 0) -> dict:
    """DDP on this rank's share of each global batch; every rank attaches with the same arguments."""
    import gradlens

    model = tiny_mlp()
    ddp = nn.parallel.DistributedDataParallel(model)
    optimizer = torch.optim.SGD(ddp.parameters(), lr=0.1, momentum=0.9)
    probes, probe_batch = probes_with_batch()
    folder = os.path.dirname(path)
    CALLS.clear()
    with gradlens.attach(
        ddp, optimizer, path, probes=probes, probe_batch=probe_batch, flush_every=1, writer_rank=writer_rank
    ) as session:
        _train(ddp, optimizer, session, rank, world, steps, kill_at)
    return {
        "recorder": type(session.recorder).__name__,
        "step": session.step,
        "calls": dict(CALLS),
        "files": sorted(os.listdir(folder)),
        "weights": [p.detach().clone() for p in model.parameters()],
    }


def fsdp2_session(rank: int, world: int, path: str, steps: int, kill_at: int | None = None) -> dict:
    """FSDP2 (fully_shard per Linear and at the root) on this rank's share; GradStats with fixed edges."""
    import numpy as np

    import gradlens
    from gradlens.probes import GradStats

    model = _fsdp2(tiny_mlp(), world)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    probes, probe_batch = probes_with_batch()
    try:
        gradlens.attach(model, optimizer, path, probes=probes, probe_batch=probe_batch)
        refused = None
    except ValueError as error:
        refused = str(error)
    probe = GradStats(bins=np.linspace(-0.3, 0.3, 13), exponents=True)
    with gradlens.attach(model, optimizer, path, probes=[probe], flush_every=1) as session:
        _train(model, optimizer, session, rank, world, steps, kill_at, die_after_backward=True)
    reducer = session.context.reducer
    return {
        "refused": refused,
        "recorder": type(session.recorder).__name__,
        "collectives": None if reducer is None else reducer.collectives,
        "exists_after_refusal": os.path.exists(path),
    }


def reference_fsdp2(path: str, steps: int) -> None:
    import numpy as np

    import gradlens
    from gradlens.probes import GradStats

    model = tiny_mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    probe = GradStats(bins=np.linspace(-0.3, 0.3, 13), exponents=True)
    with gradlens.attach(model, optimizer, path, probes=[probe], flush_every=1) as session:
        _train(model, optimizer, session, 0, 1, steps, None)
