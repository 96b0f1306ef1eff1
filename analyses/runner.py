"""Run the experiments of a sweep: keyed by a hash of their configuration, reused, resumed, parallel.

An analysis module (``analyses/<name>.py``) provides

- ``Config``: a frozen dataclass with ``smoke()``, ``quick()`` and ``paper()`` presets (class methods);
- ``runs(config) -> list[dict]``: one JSON-ready parameter dict per independent run of the sweep;
- ``execute(params, path, *, data_dir, resume, progress)``: does one run and writes ``path`` (a training run
  through ``gradlens.attach``, or a computed result through ``gradlens.results.save_result``), storing
  ``params`` as the file's configuration.

A run's file is ``<root>/<analysis>/<key>.h5`` with ``key`` = SHA-256 of ``(analysis, params)``. A finished
file is reused; an unfinished one (interrupted, killed) is resumed from its checkpoint
``<key>.ckpt.pt`` when the analysis supports it, else redone; ``force`` redoes everything.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
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


def analysis_module(name: str):
    """The module ``analyses.<name>``; a clear error naming the known analyses when missing."""
    try:
        return importlib.import_module(f"analyses.{name}")
    except ModuleNotFoundError as error:
        if error.name != f"analyses.{name}":
            raise
        known = sorted(p.stem for p in Path(__file__).parent.glob("*.py") if not p.stem.startswith("_"))
        raise KeyError(f"unknown analysis {name!r}; known: {', '.join(known)}") from None


def preset(analysis: str, scale: str):
    """The ``Config`` of ``analysis`` at ``scale`` (smoke, quick or paper)."""
    if scale not in ("smoke", "quick", "paper"):
        raise ValueError(f"scale {scale!r} is not one of smoke, quick, paper")
    return getattr(analysis_module(analysis).Config, scale)()


def plan(analysis: str, scale: str) -> list[RunSpec]:
    """Every run of ``analysis`` at ``scale``."""
    config = preset(analysis, scale)
    return [RunSpec(analysis, params) for params in analysis_module(analysis).runs(config)]


def status(path: Path) -> str:
    """``"missing"``, ``"finished"``, or the unfinished status stored in the file (``"running"``...)."""
    if not path.exists():
        return "missing"
    try:
        with h5py.File(path, "r", locking=False) as file:
            if "run/status" in file:
                return file["run/status"][()].decode()
            return str(file.attrs.get("status", "unknown"))
    except OSError:
        return "unreadable"


def _execute(spec: RunSpec, root: str, data_dir: str | None, resume: bool, threads: int | None) -> str:
    if threads is not None:  # a worker process: share the cores with the other workers
        import torch

        torch.set_num_threads(threads)
    path = spec.path(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    analysis_module(spec.analysis).execute(spec.params, path, data_dir=data_dir, resume=resume, progress=False)
    return str(path)


def ensure_runs(
    specs: Sequence[RunSpec],
    root: str | os.PathLike,
    *,
    data_dir: str | None = None,
    jobs: int = 1,
    force: bool = False,
    progress: bool = True,
) -> dict[RunSpec, Path]:
    """Make sure every run exists and is finished; returns spec -> file path.

    Finished runs are reused (unless ``force``); unfinished ones are resumed; missing ones are done, in
    ``jobs`` worker processes (each with ``cpu_count // jobs`` torch threads); with ``jobs=1`` in this process,
    with its own thread setting.
    """
    root = str(root)
    todo = []
    for spec in dict.fromkeys(specs):
        state = status(spec.path(root))
        if force or state != "finished":
            resume = not force and state not in ("missing", "unreadable")
            if force and spec.path(root).exists():
                spec.path(root).unlink()
                checkpoint = spec.path(root).with_suffix(".ckpt.pt")
                if checkpoint.exists():
                    checkpoint.unlink()
            todo.append((spec, resume))
    jobs = max(1, min(jobs, len(todo) or 1))
    threads = max(1, (os.cpu_count() or 1) // jobs)
    bar = tqdm(total=len(todo), desc="runs", disable=not progress or not todo)
    with bar:
        if jobs == 1:
            for spec, resume in todo:
                bar.set_postfix_str(f"{spec.analysis} {spec.key}")
                _execute(spec, root, data_dir, resume, None)  # in this process: its thread setting stays
                bar.update()
        else:
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
                futures = [pool.submit(_execute, spec, root, data_dir, resume, threads) for spec, resume in todo]
                for future in as_completed(futures):
                    future.result()
                    bar.update()
    return {spec: spec.path(root) for spec in specs}
