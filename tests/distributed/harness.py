"""Run a function on N local processes joined in a gloo process group (CPU), for the distributed tests.

``run_ranks(target, world, *args)`` starts ``world`` processes, each calling ``target(rank, world, *args)``
after ``torch.distributed.init_process_group("gloo")`` on a free localhost port, and returns one
:class:`Outcome` per rank: the value it returned, or the exception it raised (type, message, traceback), or
its exit code when it died. Processes are not torn down when one fails (unlike ``torch.multiprocessing.spawn``),
so a test can watch how the survivors react to a dead rank.

Speed: processes start from a forkserver that has imported torch and gradlens once per test session, so
a 2-rank group costs a fraction of a second instead of two fresh interpreters importing torch.
"""

from __future__ import annotations

import datetime
import os
import pickle
import socket
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch.multiprocessing as mp

PRELOAD = [
    "torch",
    "torch._dynamo",
    "torch.distributed",
    "torch.distributed.tensor",
    "torch.distributed.fsdp",
    "torch.distributed.device_mesh",
    "gradlens.session",
    "gradlens.distributed",
    "gradlens.probes",
]
# hang guards, not speed claims: on a loaded machine (load 40 on 2 cores) the writer rank computing the probes can
# keep the other rank waiting in DDP's all-reduce for minutes, and a 30 s group timeout failed such runs
GROUP_TIMEOUT_S = 300.0
DEADLINE_S = 300.0
REPO = Path(__file__).resolve().parents[2]


@dataclass
class Outcome:
    """What one rank did: ``value`` when it returned, ``error``/``message``/``trace`` when it raised,
    ``exitcode`` always (None if it had to be killed after the deadline), ``seconds`` from start to exit."""

    rank: int
    exitcode: int | None
    value: object = None
    error: str | None = None
    message: str | None = None
    trace: str | None = None
    seconds: float | None = None

    @property
    def ok(self) -> bool:
        return self.exitcode == 0 and self.error is None


def free_port() -> int:
    """A TCP port nobody listens on right now (bind to port 0, read it, release it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank: int, world: int, port: int, outdir: str, target: Callable, args: tuple, group_timeout: float | None):
    import torch
    import torch.distributed as dist

    # what torchrun sets, so that code written for torchrun (init_process_group() from the environment) runs
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        OMP_NUM_THREADS="1",
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_WORLD_SIZE=str(world),
        GROUP_RANK="0",
        NODE_RANK="0",
    )
    torch.set_num_threads(1)
    start = time.monotonic()
    result: dict = {}
    try:
        if group_timeout is not None:
            dist.init_process_group(
                "gloo", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=group_timeout)
            )
        result = {"value": target(rank, world, *args)}
    except BaseException as error:  # report everything, including SystemExit, to the test
        result = {
            "error": type(error).__name__,
            "message": str(error),
            "trace": "".join(traceback.format_exception(error)),
        }
    result["seconds"] = time.monotonic() - start
    with open(Path(outdir) / f"rank{rank}.pkl", "wb") as f:
        pickle.dump(result, f)
    if "error" not in result and dist.is_initialized():
        dist.destroy_process_group()
    os._exit(0 if "error" not in result else 1)  # skip interpreter teardown (gloo threads, h5py)


def _start_forkserver() -> None:
    """Start the forkserver from the repository root: it imports PRELOAD with the Python 3.11 default sys.path
    ('' = its working directory first), so a test that changed directory must not decide which gradlens it gets."""
    from multiprocessing import forkserver

    here = os.getcwd()
    os.chdir(REPO)
    try:
        forkserver.ensure_running()
    finally:
        os.chdir(here)


def run_ranks(
    target: Callable,
    world: int,
    *args: object,
    deadline: float = DEADLINE_S,
    group_timeout: float | None = GROUP_TIMEOUT_S,
) -> list[Outcome]:
    """Run ``target(rank, world, *args)`` on ``world`` processes; kill any still running after ``deadline`` s.

    ``target`` must be importable by reference (a module-level function). The environment is torchrun's
    (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``); with ``group_timeout=None`` the
    target initialises the process group itself, as a script started by torchrun does.
    """
    context = mp.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    _start_forkserver()
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="gradlens-ranks-") as outdir:
        processes = [
            context.Process(target=_entry, args=(rank, world, port, outdir, target, args, group_timeout))
            for rank in range(world)
        ]
        for process in processes:
            process.start()
        end = time.monotonic() + deadline
        for process in processes:
            process.join(max(end - time.monotonic(), 0.1))
        outcomes = []
        for rank, process in enumerate(processes):
            if process.is_alive():
                process.kill()
                process.join()
                outcomes.append(Outcome(rank, None, error="Deadline", message=f"still running after {deadline} s"))
                continue
            saved = Path(outdir) / f"rank{rank}.pkl"
            result = pickle.loads(saved.read_bytes()) if saved.exists() else {}
            outcomes.append(Outcome(rank, process.exitcode, **result))
    return outcomes


def exec_script(rank: int, world: int, source: str, name: str, cwd: str) -> None:
    """Run ``source`` as a script's ``__main__`` in ``cwd`` (what ``torchrun script.py`` would do on this rank)."""
    os.chdir(cwd)
    exec(compile(source, name, "exec"), {"__name__": "__main__"})


def check(outcomes: list[Outcome]) -> list[object]:
    """Every rank's returned value; fails with the ranks' tracebacks when one did not return."""
    failed = [o for o in outcomes if not o.ok]
    if failed:
        details = "\n".join(f"rank {o.rank} exit {o.exitcode}: {o.error}: {o.message}\n{o.trace or ''}" for o in failed)
        raise AssertionError(f"{len(failed)} rank(s) failed:\n{details}")
    return [o.value for o in outcomes]
