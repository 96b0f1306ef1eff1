"""Runs on data that may be absent here (Fashion-MNIST, CIFAR-10, EMNIST): run when present, else say so.

A run whose params carry ``"optional_data": True`` and whose dataset is not found in the data folders
(``--data-dir``, ``$GRADLENS_DATA``, then the operating system's dataset folders; see
:mod:`gradlens.data.locate`), or whose files there are refused as not that dataset
(:class:`gradlens.data.DatasetIdentityError`), writes a
*not-run marker* instead of failing: a result file holding the array ``not_run`` (the data module's one-line
message) and the file status ``"not_run"``. Because that status is not ``"finished"``,
the runner tries the run again on every invocation, so the run happens as soon as the data is there.
Figures test :func:`is_not_run` and print the message in place of the panel/table. Without the flag (the
``paper`` presets) a missing dataset fails with the data module's error, as ``FIGURES.md`` asks.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from analyses.common import load_data
from gradlens.data import Dataset, DatasetIdentityError
from gradlens.results import Result, save_result

NOT_RUN = "not_run"


def load_or_mark(params: dict, path: Path, data_dir: str | None) -> Dataset | None:
    """The run's dataset; with ``optional_data`` and no files, write the not-run marker and return None."""
    try:
        return load_data(params, data_dir)
    except (FileNotFoundError, DatasetIdentityError) as error:
        if not params.get("optional_data"):
            raise
        message = unavailable(params["dataset"], error)
        save_result(path, {"config": params, NOT_RUN: message}, {NOT_RUN: np.array(message)}, overwrite=True)
        with h5py.File(path, "r+") as file:
            file.attrs["status"] = NOT_RUN
        return None


def unavailable(dataset: str, error: Exception) -> str:
    """Why a run lacks its data, in one line: ``"<dataset> was refused (<message>)"`` for a
    :class:`DatasetIdentityError`, ``"… was not found (…)"`` for absent files, ``"… cannot be read (…)"``
    for any other error of the data module (a truncated or malformed file)."""
    if isinstance(error, DatasetIdentityError):
        what = "was refused"
    elif isinstance(error, FileNotFoundError):
        what = "was not found"
    else:
        what = "cannot be read"
    return f"{dataset} {what} ({str(error).splitlines()[0]})"


def is_not_run(recorded: object) -> bool:
    """True for a not-run marker written by :func:`load_or_mark`."""
    return isinstance(recorded, Result) and NOT_RUN in recorded.arrays


def not_run_reason(recorded: Result) -> str:
    """The message stored in a not-run marker."""
    return str(recorded[NOT_RUN])
