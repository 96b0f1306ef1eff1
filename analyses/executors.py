"""Where the runs of :func:`analyses.runner.run_all` happen: this machine (default) or a Ray cluster.

An executor has one method, ``run(todo, root, data_dir, finished)``: it does every :class:`RunSpec` of
``todo`` so that its file ends up finished at ``spec.path(root)``, and calls ``finished(spec, error)`` once per
run as it ends (``error`` None, or ``"ExcType: message"`` when the run failed for good). A failed run never
stops the others.

Retries: a run whose worker process dies (killed, out of memory, ``os._exit``) is tried again, at most
``max_retries`` more times; it resumes from the checkpoint its dead attempt left where that checkpoint can be
reached (locally always; on Ray when the output folder is shared, or the retry lands on the same node). A run
that raises a Python exception is not retried: the same parameters would raise again. With ``jobs=1`` (or one
run to do) the local executor runs in this process, where a dying run ends the caller too.

``LocalExecutor`` is today's runner: ``jobs=1`` runs in this process, ``jobs > 1`` in a spawn process pool
with ``cpu_count // jobs`` torch threads per worker. ``RayExecutor`` submits each run as one Ray task; Ray is
imported only when it starts.

Devices: each executor holds the ``device`` its runs train on (``auto``, ``cpu``, ``cuda``, ``cuda:K``;
:func:`analyses.run_spec.execute_run` resolves it where the run happens). Local workers share the one GPU named
(``auto``/``cuda``: the current one). A Ray task asks for a GPU only when its run will use one: the run's
analysis computes on a device (:func:`analyses.run_spec.uses_device`) and ``device`` is ``cuda``, or ``auto``
on a cluster with GPUs; it then trains on the GPU Ray gives it, every other task on its CPUs.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from analyses.run_spec import RunSpec, analysis_module, error_text, execute_run, files_of, status, uses_device

Finished = Callable[[RunSpec, "str | None"], None]
EXECUTORS = ("local", "ray")


def _checked_device(device: str) -> str:
    from gradlens.train import check_device_name

    return check_device_name(device)


class LocalExecutor:
    """Runs on this machine: in this process (``jobs=1``) or in ``jobs`` spawned worker processes, on ``device``."""

    def __init__(self, jobs: int = 1, max_retries: int = 2, device: str = "auto"):
        if jobs < 1:
            raise ValueError(f"jobs={jobs} is invalid; pass 1 or more worker processes")
        if max_retries < 0:
            raise ValueError(f"max_retries={max_retries} is invalid; pass 0 or more")
        self.jobs, self.max_retries, self.device = jobs, max_retries, _checked_device(device)

    def run(self, todo: Sequence[RunSpec], root: str, data_dir: str | None, finished: Finished) -> None:
        jobs = max(1, min(self.jobs, len(todo)))
        if jobs == 1:
            for spec in todo:
                try:
                    execute_run(spec, root, data_dir, None, self.device)  # in this process: its threads stay
                except Exception as error:  # noqa: BLE001 - recorded as the run's failure, the others go on
                    finished(spec, error_text(error))
                else:
                    finished(spec, None)
            return
        threads = max(1, (os.cpu_count() or 1) // jobs)
        attempts = dict.fromkeys(todo, 0)
        context = multiprocessing.get_context("spawn")
        # first round: one pool for every run. A dead worker breaks the whole pool, so which run killed it is
        # unknown: every run it broke is retried alone, in a pool of its own, where a death is its own.
        rounds = [list(todo)]
        while rounds:
            batch = rounds.pop(0)
            with ProcessPoolExecutor(max_workers=min(jobs, len(batch)), mp_context=context) as pool:
                futures = {pool.submit(execute_run, spec, root, data_dir, threads, self.device): spec
                           for spec in batch}
                for future in as_completed(futures):
                    spec = futures[future]
                    attempts[spec] += 1
                    try:
                        future.result()
                    except BrokenProcessPool:
                        if attempts[spec] <= self.max_retries:
                            rounds.append([spec])
                        else:
                            finished(spec, f"worker process died in each of {attempts[spec]} attempts")
                    except Exception as error:  # noqa: BLE001
                        finished(spec, error_text(error))
                    else:
                        finished(spec, None)

    def describe(self) -> str:
        where = "this process" if self.jobs == 1 else f"{self.jobs} local worker processes"
        return f"{where}, device {self.device}"


# --- Ray -------------------------------------------------------------------------------------------------------

REPO = Path(__file__).resolve().parent.parent


def import_ray():
    """``ray``, or a one-line error saying how to install it."""
    try:
        import ray
    except ImportError:
        raise RuntimeError(
            "--executor ray needs Ray, which is not installed: pip install -c constraints.txt 'gradlens[ray]'"
        ) from None
    return ray


def parse_resources(entries: Sequence[str]) -> dict[str, dict[str, float]]:
    """``["num_cpus=2", "noise_stability:num_gpus=0.5,num_cpus=4"]`` -> ``{"*": {...}, "noise_stability": {...}}``."""
    out: dict[str, dict[str, float]] = {}
    for entry in entries:
        analysis, _, spec = entry.rpartition(":")
        values = {}
        for part in spec.split(","):
            key, _, value = part.partition("=")
            try:
                values[key.strip()] = float(value)
            except ValueError:
                raise ValueError(f"--resources {entry!r} is invalid; write [ANALYSIS:]num_cpus=N,num_gpus=G") from None
        unknown = set(values) - {"num_cpus", "num_gpus", "memory"}
        if unknown:
            raise ValueError(f"--resources {entry!r}: unknown resource {sorted(unknown)[0]!r}; use num_cpus, num_gpus "
                             "or memory (bytes)")
        out.setdefault(analysis or "*", {}).update(values)
    return out


def _ray_task(
    analysis: str, params: dict, root: str, data_dir: str | None, threads: int, shared: bool,
    token: str, seed_files: Mapping[str, bytes], device: str = "cpu",
) -> dict[str, bytes] | str:
    """One run on a Ray worker (module level so Ray pickles it by reference), on ``device`` (``cuda``: the GPU
    Ray gave the task, the only one it sees).

    Shared output folder: the run writes into ``root`` itself and returns its path. Otherwise it works in a
    scratch folder of this node (``<tmp>/gradlens-ray/<token>``, so a retry on the same node resumes from its
    checkpoint), starting from the unfinished files the driver sent (``seed_files``, a resumed run), and
    returns every file of the run as bytes, which Ray carries back to the driver through its object store.
    """
    spec = RunSpec(analysis, params)
    if shared:
        return execute_run(spec, root, data_dir, threads, device)
    scratch = Path(tempfile.gettempdir()) / "gradlens-ray" / token
    folder = spec.path(scratch).parent
    folder.mkdir(parents=True, exist_ok=True)
    if not files_of(spec, scratch):  # first attempt on this node: start from the driver's files
        for name, data in seed_files.items():
            (folder / name).write_bytes(data)
    execute_run(spec, str(scratch), data_dir, threads, device)
    files = {path.name: path.read_bytes() for path in files_of(spec, scratch)}
    for path in files_of(spec, scratch):
        path.unlink()
    return files


def _sees(path: str) -> bool:
    return Path(path).exists()


class RayExecutor:
    """Each run one Ray task: one GPU for a run that will use one (see the module docstring), one CPU otherwise.

    Args:
        address: the cluster (``ray://host:10001``, ``host:6379`` or ``auto``); None starts a Ray instance on
            this machine, or uses the one this process already joined.
        shared: True when ``root`` is a folder every node reaches at the same path (runs write there; a retried
            run resumes from its checkpoint); False to carry every file back through the object store; None
            to find out (a probe file in ``root`` looked for by one task on each node).
        max_retries: retries of a run whose worker died.
        resources: analysis (or ``"*"``) -> Ray resources of each of its runs (``num_cpus``, ``num_gpus``,
            ``memory``); an analysis module's own ``RESOURCES`` dict comes between the default and these.
        runtime_env: merged into the one the executor builds (``py_modules``: the repository's ``analyses``
            and ``gradlens`` packages, so workers need no checkout; ``env_vars``: ``GRADLENS_DATA``).
        device: ``auto`` (a GPU per run on a cluster with GPUs), ``cpu`` or ``cuda`` (a GPU per run; the
            cluster must have GPUs). Ray picks each task's GPU, so ``cuda:K`` is refused.
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        shared: bool | None = None,
        max_retries: int = 2,
        resources: Mapping[str, Mapping[str, float]] | None = None,
        runtime_env: Mapping[str, object] | None = None,
        device: str = "auto",
    ):
        if max_retries < 0:
            raise ValueError(f"max_retries={max_retries} is invalid; pass 0 or more")
        if _checked_device(device).startswith("cuda:"):
            raise ValueError(f"--device {device} picks a GPU, but Ray gives each task its own; use --device cuda "
                             "(or auto) with --executor ray")
        self.device = device
        self.address, self.shared, self.max_retries = address, shared, max_retries
        self.resources = {k: dict(v) for k, v in (resources or {}).items()}
        self.runtime_env = dict(runtime_env or {})
        self._ray = None
        self._started = False
        self._gpus: bool | None = None  # whether the cluster has GPUs (asked once)

    def start(self):
        """Join (or start) the cluster; returns ``ray``."""
        if self._ray is not None:
            return self._ray
        ray = import_ray()
        if not ray.is_initialized():
            ray.init(address=self.address, runtime_env=self._runtime_env(), log_to_driver=False,
                     include_dashboard=False if self.address is None else None)
            self._started = True
        self._ray = ray
        return ray

    def close(self) -> None:
        """Leave the cluster if this executor joined it."""
        if self._started and self._ray is not None:
            self._ray.shutdown()
        self._ray, self._started, self._gpus = None, False, None

    def _runtime_env(self) -> dict:
        import gradlens

        env = dict(self.runtime_env)
        modules = [str(REPO / "analyses"), str(Path(gradlens.__file__).parent)]
        env["py_modules"] = [*modules, *env.get("py_modules", [])]
        env_vars = {"GRADLENS_DATA": os.environ["GRADLENS_DATA"]} if "GRADLENS_DATA" in os.environ else {}
        env["env_vars"] = {**env_vars, **env.get("env_vars", {})}
        return env

    def wants_gpu(self, analysis: str) -> bool:
        """Whether a run of ``analysis`` will train on a GPU: it computes on a device, and ``device`` is ``cuda``,
        or ``auto`` on a cluster with GPUs (asked once). ``cuda`` on a cluster without GPUs is an error (Ray
        would wait for a GPU forever)."""
        if self.device == "cpu" or not uses_device(analysis):
            return False
        if self._gpus is None:
            self._gpus = self.start().cluster_resources().get("GPU", 0) > 0
        if self.device == "cuda" and not self._gpus:
            raise ValueError("--device cuda, but the Ray cluster has no GPU; start its nodes with --num-gpus N, or "
                             "use --device auto or cpu")
        return self._gpus

    def resources_for(self, analysis: str) -> dict[str, float]:
        """The Ray resources of one run of ``analysis``: one GPU when it will use one (:meth:`wants_gpu`), else one
        CPU; the module's ``RESOURCES`` and ``--resources`` on top."""
        default = {"num_gpus": 1.0} if self.wants_gpu(analysis) else {"num_cpus": 1.0}
        module_resources = getattr(analysis_module(analysis), "RESOURCES", {}) if "." not in analysis else {}
        return {**default, **module_resources, **self.resources.get("*", {}), **self.resources.get(analysis, {})}

    def device_for(self, resources: Mapping[str, float]) -> str:
        """The device a task with ``resources`` trains on: ``cuda`` (the GPU Ray gives it) when it holds a GPU,
        else ``cpu`` (also under ``auto``: a task without a GPU must not take one of the node's)."""
        return "cuda" if resources.get("num_gpus", 0) > 0 else "cpu"

    def is_shared(self, root: str) -> bool:
        """Whether every alive node sees ``root`` (a probe file written here, looked for by one task per node)."""
        if self.shared is not None:
            return self.shared
        ray = self.start()
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        Path(root).mkdir(parents=True, exist_ok=True)
        probe = Path(root) / f".gradlens-probe-{uuid.uuid4().hex}"
        probe.write_text("probe")
        try:
            task = ray.remote(num_cpus=0)(_sees)
            nodes = [node["NodeID"] for node in ray.nodes() if node["Alive"]]
            seen = ray.get([
                task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)).remote(str(probe))
                for node in nodes
            ])
        finally:
            probe.unlink()
        self.shared = all(seen)
        return self.shared

    def run(self, todo: Sequence[RunSpec], root: str, data_dir: str | None, finished: Finished) -> None:
        ray = self.start()
        root = str(Path(root).resolve())
        shared = self.is_shared(root)
        token = uuid.uuid4().hex
        task = ray.remote(_ray_task)
        refs = {}
        for spec in todo:
            resources = self.resources_for(spec.analysis)
            threads = max(1, int(resources.get("num_cpus", 1)))
            seed = {} if shared else {p.name: p.read_bytes() for p in files_of(spec, root)}
            ref = task.options(max_retries=self.max_retries, retry_exceptions=False, **resources).remote(
                spec.analysis, spec.params, root, data_dir, threads, shared, token, seed, self.device_for(resources)
            )
            refs[ref] = spec
        waiting = list(refs)
        while waiting:
            ready, waiting = ray.wait(waiting, num_returns=1)
            spec = refs[ready[0]]
            try:
                result = ray.get(ready[0])
            except Exception as error:  # noqa: BLE001 - a task error or a worker that died in every attempt
                finished(spec, error_text(error))
                continue
            if not shared:
                self._receive(spec, root, result)
            finished(spec, None if status(spec.path(root)) == "finished" else "the run ended without finishing")

    @staticmethod
    def _receive(spec: RunSpec, root: str, files: Mapping[str, bytes]) -> None:
        """Write a run's files into ``root`` (the run's own file last, each through a temporary name)."""
        folder = spec.path(root).parent
        folder.mkdir(parents=True, exist_ok=True)
        for old in files_of(spec, root):
            if old.name not in files:
                old.unlink()  # e.g. the checkpoint of an interrupted attempt the worker has since removed
        for name in sorted(files, key=lambda n: n == spec.path(root).name):
            temporary = folder / f".{name}.{uuid.uuid4().hex}.part"
            temporary.write_bytes(files[name])
            shutil.move(temporary, folder / name)

    def describe(self) -> str:
        where = self.address or "a Ray instance on this machine"
        return f"Ray tasks on {where}, device {self.device}"


def make_executor(
    kind: str,
    *,
    jobs: int = 1,
    address: str | None = None,
    shared: bool | None = None,
    max_retries: int = 2,
    resources: Sequence[str] = (),
    device: str = "auto",
):
    """The executor named ``kind`` (``local`` or ``ray``) from command-line options."""
    if kind == "local":
        if address is not None:
            raise ValueError("--address needs --executor ray")
        return LocalExecutor(jobs, max_retries, device)
    if kind == "ray":
        import_ray()
        return RayExecutor(address, shared=shared, max_retries=max_retries, resources=parse_resources(resources),
                           device=device)
    raise ValueError(f"executor {kind!r} is unknown; use one of {', '.join(EXECUTORS)}")
