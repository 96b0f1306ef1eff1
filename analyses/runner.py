"""Run the experiments of a sweep: keyed by a hash of their configuration, reused, resumed, parallel.

An analysis module (``analyses/<name>.py``) provides

- ``Config``: a frozen dataclass with ``smoke()``, ``quick()``, ``medium()`` and ``paper()`` presets (class
  methods; ``medium`` = ``quick`` where quick already shows what the document claims, said in its docstring);
- ``runs(config) -> list[dict]``: one JSON-ready parameter dict per independent run of the sweep;
- ``execute(params, path, *, data_dir, resume, progress)``: does one run and writes ``path`` (a training run
  through ``gradlens.attach``, or a computed result through ``gradlens.results.save_result``), storing
  ``params`` as the file's configuration;
- optionally ``RUNS_OF``: the name of another analysis whose runs these are (a subset or variant of its sweep,
  e.g. ``simplified_curves`` of ``simplified_training``): they are keyed, stored and done as that analysis's
  runs, so a run both analyses plan has one file and is done once.

A run's file is ``<root>/<analysis>/<key>.h5`` with ``key`` = SHA-256 of ``(analysis, params)``. A finished
file is reused; an unfinished one (interrupted, killed) is resumed from its checkpoint
``<key>.ckpt.pt`` when the analysis supports it, else redone; ``force`` redoes everything.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import h5py
from tqdm.auto import tqdm


@dataclass(frozen=True, eq=False)
class RunSpec:
    """One run: the analysis that does it and its parameters (equal specs have equal keys)."""

    analysis: str
    params: dict

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RunSpec) and other.key == self.key

    def __hash__(self) -> int:
        return hash(self.key)

    @property
    def key(self) -> str:
        """A short stable hash of the analysis name and its parameters."""
        text = json.dumps({"analysis": self.analysis, "params": self.params}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def path(self, root: str | os.PathLike) -> Path:
        """Where this run's HDF5 file lives under ``root``."""
        return Path(root) / self.analysis / f"{self.key}.h5"


# modules of this folder that are not analyses
HELPERS = ("__init__", "runner", "executors", "estimate", "common", "van_common", "optional_data")


def known_analyses() -> list[str]:
    """The names of every analysis module in this folder."""
    return sorted(p.stem for p in Path(__file__).parent.glob("*.py") if p.stem not in HELPERS)


def analysis_module(name: str):
    """The module ``analyses.<name>`` (a dotted ``name`` is imported as it is: an analysis kept elsewhere, e.g.
    a test's); a clear error naming the known analyses when missing."""
    module = name if "." in name else f"analyses.{name}"
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        if error.name != module:
            raise
        raise KeyError(f"unknown analysis {name!r}; known: {', '.join(known_analyses())}") from None


SCALES = ("smoke", "quick", "medium", "paper")


def preset(analysis: str, scale: str):
    """The ``Config`` of ``analysis`` at ``scale`` (smoke, quick, medium or paper)."""
    if scale not in SCALES:
        raise ValueError(f"scale {scale!r} is not one of {', '.join(SCALES)}")
    return getattr(analysis_module(analysis).Config, scale)()


def plan(analysis: str, scale: str) -> list[RunSpec]:
    """Every run of ``analysis`` at ``scale`` (runs of the analysis named by its ``RUNS_OF``, where it has one)."""
    config = preset(analysis, scale)
    module = analysis_module(analysis)
    owner = getattr(module, "RUNS_OF", analysis)
    return [RunSpec(owner, params) for params in module.runs(config)]


def status(path: Path) -> str:
    """``"missing"``, ``"finished"``, or the unfinished status stored in the file (``"running"``...)."""
    if not path.exists():
        return "missing"
    for swmr in (False, True):  # a writer killed in SWMR mode leaves a file only an SWMR reader opens
        try:
            with h5py.File(path, "r", locking=False, swmr=swmr) as file:
                if "run/status" in file:
                    return file["run/status"][()].decode()
                return str(file.attrs.get("status", "unknown"))
        except OSError:
            continue
    return "unreadable"


def execute_run(spec: RunSpec, root: str, data_dir: str | None, threads: int | None) -> str:
    """Do (or resume) one run into ``spec.path(root)``; what every executor's worker calls.

    Whether to resume is read from the file at the time the run starts, so a retried run resumes from the
    checkpoint its killed attempt left (``force`` deleted the files before the first attempt).
    """
    if threads is not None:  # a worker process: share the cores with the other workers
        import torch

        torch.set_num_threads(threads)
    path = spec.path(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    resume = status(path) not in ("missing", "unreadable")
    analysis_module(spec.analysis).execute(spec.params, path, data_dir=data_dir, resume=resume, progress=False)
    return str(path)


def error_text(error: BaseException) -> str:
    """``"ExcType: first line of the message"`` (the cause of a Ray task error, where there is one)."""
    cause = getattr(error, "cause", None)
    if isinstance(cause, BaseException) and cause is not error:
        error = cause
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def files_of(spec: RunSpec, root: str | os.PathLike) -> list[Path]:
    """The run's file and every file beside it named ``<key>.*`` (checkpoint, weights, training run...)."""
    folder = spec.path(root).parent
    return sorted(folder.glob(f"{spec.key}.*")) if folder.is_dir() else []


@dataclass
class Outcome:
    """What :func:`run_all` did.

    Attributes:
        paths: spec -> its file, for every spec asked for (failed ones included: their file is unfinished
            or missing).
        reused: specs whose finished file was reused.
        done: specs run (or resumed) and finished now.
        failures: spec -> ``"ExcType: message"`` of each run that failed after its retries.
    """

    paths: dict[RunSpec, Path]
    reused: list[RunSpec] = field(default_factory=list)
    done: list[RunSpec] = field(default_factory=list)
    failures: dict[RunSpec, str] = field(default_factory=dict)


class RunsFailed(RuntimeError):
    """Some runs failed (after their retries); the others finished. ``outcome`` says which."""

    def __init__(self, outcome: Outcome):
        self.outcome = outcome
        names = "; ".join(f"{s.analysis}/{s.key}: {e}" for s, e in outcome.failures.items())
        super().__init__(f"{len(outcome.failures)} of {len(outcome.paths)} runs failed: {names}")


def run_all(
    specs: Sequence[RunSpec],
    root: str | os.PathLike,
    *,
    data_dir: str | None = None,
    executor=None,
    force: bool = False,
    progress: bool = True,
) -> Outcome:
    """Make sure every run exists and is finished, going on past failed runs; returns the :class:`Outcome`.

    Finished runs are reused (unless ``force``: then their files are deleted first); unfinished ones are
    resumed; missing ones are done by ``executor`` (default: :class:`analyses.executors.LocalExecutor` with one
    job, i.e. in this process). One progress bar counts the runs to do, wherever they run.
    """
    from analyses.executors import LocalExecutor

    executor = executor or LocalExecutor()
    root = str(root)
    unique = list(dict.fromkeys(specs))
    outcome = Outcome({spec: spec.path(root) for spec in unique})
    todo = []
    for spec in unique:
        if force:
            for path in files_of(spec, root):
                path.unlink()
        if status(spec.path(root)) == "finished":
            outcome.reused.append(spec)
        else:
            todo.append(spec)
    bar = tqdm(total=len(todo), desc="runs", disable=not progress or not todo)

    def finished(spec: RunSpec, error: str | None) -> None:
        if error is None:
            outcome.done.append(spec)
        else:
            outcome.failures[spec] = error
        bar.set_postfix_str(f"{spec.analysis} {spec.key}" + (" failed" if error else ""))
        bar.update()

    with bar:
        if todo:
            executor.run(todo, root, data_dir, finished)
    return outcome


def ensure_runs(
    specs: Sequence[RunSpec],
    root: str | os.PathLike,
    *,
    data_dir: str | None = None,
    jobs: int = 1,
    force: bool = False,
    progress: bool = True,
    executor=None,
) -> dict[RunSpec, Path]:
    """Make sure every run exists and is finished; returns spec -> file path.

    Finished runs are reused (unless ``force``); unfinished ones are resumed; missing ones are done, in
    ``jobs`` worker processes (each with ``cpu_count // jobs`` torch threads); with ``jobs=1`` in this process,
    with its own thread setting. ``executor`` replaces that local pool (e.g.
    :class:`analyses.executors.RayExecutor`). A failed run does not stop the others; once they are done,
    :class:`RunsFailed` names every failed run with its error.
    """
    from analyses.executors import LocalExecutor

    outcome = run_all(
        specs, root, data_dir=data_dir, executor=executor or LocalExecutor(jobs), force=force, progress=progress
    )
    if outcome.failures:
        raise RunsFailed(outcome)
    return {spec: spec.path(root) for spec in specs}
