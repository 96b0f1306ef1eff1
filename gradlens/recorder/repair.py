"""``gradlens repair``: close the file of a killed writer so that every HDF5 tool opens it.

A writer killed in SWMR mode leaves the file's superblock marked "open for write": ``gradlens.load`` reads it,
but plain ``h5py.File(path)``, HDFView or h5dump refuse it ("file is already open for write"). :func:`repair`
writes a clean copy holding exactly the committed rows (:mod:`gradlens.recorder.copy`; the rows still in a
version 3 file's tails included), compacted (:mod:`gradlens.recorder.compact`), with ``/run/status`` =
``"interrupted"``,
checks that the copy opens without SWMR and holds the same row counts, and puts it in place atomically.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import NamedTuple

import h5py

from gradlens.loader import open_run_file, superblock
from gradlens.lock import RunLock
from gradlens.recorder.copy import committed_rows, copy_records
from gradlens.recorder.runfile import RunFile
from gradlens.schema import STATUS_INTERRUPTED, STATUS_RUNNING


class Repaired(NamedTuple):
    """What :func:`repair` did."""

    repaired: bool  # False: the file was closed cleanly, nothing to do
    status: str  # /run/status of the file now
    rows: dict[str, int]  # committed rows kept per table ("scalars", "events", "probes/<name>")
    backup: Path | None  # the original, kept as <path>.bak


def repair(path: str | os.PathLike, *, backup: bool = True) -> Repaired:
    """Close a run whose writer was killed, so that every HDF5 tool opens it (what ``gradlens repair`` runs).

    Writes a clean copy holding exactly the committed rows (every table cut at ``n_rows``), with
    ``/run/status`` = ``"interrupted"`` (a killed writer's file says ``"running"``), checks that the copy opens
    without SWMR and holds the same row counts, and puts it in place with an atomic ``os.replace``. The
    original is kept as ``<path>.bak`` unless ``backup=False``. The copy is written in the current schema
    version; stored dtypes are kept.

    Raises:
        gradlens.lock.LockedError: a live writer holds the file.
        FileExistsError: the backup ``<path>.bak`` exists already.
        FileNotFoundError, ValueError: ``path`` is missing, not a gradlens run, truncated or damaged.
    """
    path = Path(path)
    with open_run_file(path):  # a one-line error for a missing, foreign or damaged file
        pass
    lock = RunLock(path)  # refuses while a writer is alive, and keeps one from starting meanwhile
    tmp = path.with_name(path.name + ".repair-tmp")
    try:
        with open_run_file(path) as old:
            status = old["run/status"][()].decode()
            rows = committed_rows(old)
        if superblock(path).flags == 0 and status != STATUS_RUNNING:
            return Repaired(False, status, rows, None)
        saved = path.with_name(path.name + ".bak")
        if backup and saved.exists():
            raise FileExistsError(f"{saved} exists; move it away or repair with --no-backup")
        if status == STATUS_RUNNING:
            status = STATUS_INTERRUPTED
        with open_run_file(path) as old:
            new = RunFile.create(str(tmp), json.loads(old.attrs["meta"]), compact=True, scalar_records=rows["scalars"])
            try:
                copy_records(old, str(path), new, None)
            finally:
                new.close(status)
        with h5py.File(tmp, "r") as copy:  # plain HDF5, no SWMR: what every tool does
            if committed_rows(copy) != rows:
                raise RuntimeError(f"the repaired copy of {path} lost rows ({committed_rows(copy)} != {rows})")
        if backup:
            try:
                os.link(path, saved)
            except OSError:  # no hard links here: a copy
                shutil.copy2(path, saved)
        os.replace(tmp, path)
        return Repaired(True, status, rows, saved if backup else None)
    finally:
        tmp.unlink(missing_ok=True)
        lock.release()
