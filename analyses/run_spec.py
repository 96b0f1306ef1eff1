"""What one run of a sweep is and how it is done: ``RunSpec``, the analysis modules, a run's file and status.

A :class:`RunSpec` names an analysis and its parameters; its key (a hash of both) names its file
``<root>/<analysis>/<key>.h5``. :func:`execute_run` does (or resumes) one run there: it is what every executor
(:mod:`analyses.executors`) runs, and it lives below the runner (:mod:`analyses.runner`, which plans sweeps and
hands them to an executor) so that neither imports the other back.

The device (``--device``) is not a parameter of the spec: a finished run is reused whichever device trained it
(its file says which: ``device`` in its configuration, ``device_name``). :func:`execute_run` resolves it in the
process that runs (``auto``: that process's GPU when it has one) and hands it to the analysis as
``params["device"]``, for the runs of analyses that compute on a device (:func:`uses_device`).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import h5py


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


def uses_device(analysis: str) -> bool:
    """Whether the runs of ``analysis`` compute on the device (they train or time nets). A module whose runs
    compute on the CPU whatever the device (Monte Carlo, closed forms, schematics) says ``USES_DEVICE = False``."""
    return bool(getattr(analysis_module(analysis), "USES_DEVICE", True))


# modules of this folder that are not analyses
HELPERS = ("__init__", "runner", "run_spec", "executors", "estimate", "common", "van_common", "optional_data")


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


def execute_run(spec: RunSpec, root: str, data_dir: str | None, threads: int | None, device: str = "auto") -> str:
    """Do (or resume) one run into ``spec.path(root)`` on ``device`` (auto, cpu, cuda, cuda:K); what every
    executor's worker calls.

    Whether to resume is read from the file at the time the run starts, so a retried run resumes from the
    checkpoint its killed attempt left (``force`` deleted the files before the first attempt). The device is
    resolved here, in the process that runs, and given to the analysis as ``params["device"]`` (``cuda:0``,
    ``cpu``) when it computes on a device (:func:`uses_device`); the spec and its key stay as they are.
    """
    from gradlens.train import check_device_name, resolve_device

    check_device_name(device)
    if threads is not None:  # a worker process: share the cores with the other workers
        import torch

        torch.set_num_threads(threads)
    path = spec.path(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    resume = status(path) not in ("missing", "unreadable")
    params = {**spec.params, "device": str(resolve_device(device))} if uses_device(spec.analysis) else spec.params
    analysis_module(spec.analysis).execute(params, path, data_dir=data_dir, resume=resume, progress=False)
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
