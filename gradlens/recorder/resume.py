"""Resume a run: copy its committed records into a new file and check that the resumed session matches it.

Copying (instead of truncating in place) also reopens runs whose writer was killed: HDF5 refuses to open those
for writing, but reads them in SWMR mode. The copy replaces the original once the resumed session's first step
declares the same layers and quantities (:func:`check_resumed`) and its first flush is committed; when they
differ, or the run is closed before any step, the copy is deleted and the original is left untouched
(:class:`gradlens.recorder.Recorder` does the replacing). Each resume is logged in ``meta["resumed"]``.
"""

from __future__ import annotations

import json
import platform
from datetime import UTC, datetime
from pathlib import Path

import h5py
import numpy as np
import torch

from gradlens.loader import layer_rows, open_run_file, read_layers, stored_quantities
from gradlens.recorder.copy import copy_records
from gradlens.recorder.runfile import RunFile
from gradlens.schema import LAYER_FIELDS, Quantity

Stored = tuple[list[dict], dict[str, dict[str, Quantity]]]  # the layer rows and probe quantities of a file


def versions() -> dict[str, str]:
    """The versions a file records in ``meta["versions"]`` (and each resume in its ``resumed`` entry)."""
    from gradlens import __version__

    return {
        "gradlens": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "h5py": h5py.version.version,
        "hdf5": h5py.version.hdf5_version,
        "python": platform.python_version(),
    }


def now() -> str:
    """The time now, ISO 8601 in UTC to the second."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def copy_for_resume(path: Path, tmp: Path, meta: dict, limit: int | None) -> tuple[RunFile, Stored | None]:
    """Copy the committed records of ``path`` with ``step <= limit`` (None: all) into ``tmp``, opened for
    writing; returns it and what the original stored (None when it has no layers yet)."""
    stored = None
    with open_run_file(path) as old:
        stored_meta = json.loads(old.attrs["meta"])
        stored_meta["resumed"].append({"step": limit, "time": now(), "versions": versions(), "meta": meta})
        if "layers" in old:
            stored = (read_layers(old), stored_quantities(old))
        new = RunFile.create(str(tmp), stored_meta)
        try:
            copy_records(old, str(path), new, limit)
        except BaseException:
            new.file.close()
            tmp.unlink(missing_ok=True)
            raise
    return new, stored


def check_resumed(path: Path, table: np.ndarray, declared: dict[str, dict[str, Quantity]], stored: Stored) -> None:
    """The resumed session declares the stored layers and quantities; a stored dtype that holds the declared
    one exactly is kept (float64 statistics of an older file stay float64).

    Raises:
        ValueError: naming the first layer row or the probes that differ.
    """
    stored_layers, stored_quantities_ = stored
    given = [[row[key] for key in LAYER_FIELDS] for row in layer_rows(table)]
    kept = [[row[key] for key in LAYER_FIELDS] for row in stored_layers]
    if given != kept:
        diff = next(
            (i for i, (a, b) in enumerate(zip(given, kept, strict=False)) if a != b),
            min(len(given), len(kept)),
        )
        raise ValueError(
            f"cannot resume {path}: the layer table differs from the stored one at row {diff} "
            f"(given {given[diff] if diff < len(given) else 'nothing'}, "
            f"stored {kept[diff] if diff < len(kept) else 'nothing'}); resume with the same model"
        )

    def same(probe: str) -> bool:
        mine, theirs = declared.get(probe), stored_quantities_.get(probe)
        if mine is None or theirs is None or list(mine) != list(theirs):
            return False
        return all(
            (q.shape, q.axes, q.labels) == (s.shape, s.axes, s.labels) and np.can_cast(q.dtype, s.dtype, "safe")
            for q, s in zip(mine.values(), theirs.values(), strict=True)
        )

    differ = sorted(p for p in {*declared, *stored_quantities_} if not same(p))
    if differ:
        raise ValueError(
            f"cannot resume {path}: probes {differ} declare other quantities than the stored run "
            f"(given {[declared.get(p) for p in differ]}, "
            f"stored {[stored_quantities_.get(p) for p in differ]}); "
            "resume with the same probes"
        )
