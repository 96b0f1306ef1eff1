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

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from analyses.run_spec import (  # noqa: F401  (moved below the runner; still imported from here)
    HELPERS,
    RunSpec,
    analysis_module,
    error_text,
    execute_run,
    files_of,
    known_analyses,
    status,
)

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
