"""Rewrite a closed run without its dead space: what the recorder does at close when the dead space is a large share.

An SWMR writer never frees file space, so a closed file keeps its tails (``docs/schema.md``) as dead space:
about 1.6 MB for GradStats of 150 parameters, 6 % of a run of 10**4 steps, 40 % of one of 10**3. When the tails
are at least ``schema.COMPACT_SHARE`` of the file, :func:`compact` writes its committed records into
``<file>.compact-tmp`` in the compact layout (no tails; a ``[layer, ...]`` column chunked one layer at a time at
deflate level ``schema.COMPACT_DEFLATE``; summary levels only as long as the run; summaries rebuilt from the
records), checks that the copy opens without SWMR and holds the same row counts, and replaces the file with an
atomic ``os.replace``. The closed file stays whole in its place until then: a process killed meanwhile leaves
it as it was, and a stray ``.compact-tmp`` that the next compaction of that file overwrites.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py

from gradlens.recorder.copy import committed_rows, copy_records
from gradlens.recorder.runfile import RunFile
from gradlens.schema import COMPACT_SHARE, RUN_STATUS, TAIL


def dead_bytes(file: h5py.File) -> int:
    """Bytes the datasets of every ``tail`` group take in ``file`` (unused once the file is closed)."""
    total = 0

    def add(name: str, item: h5py.HLObject) -> None:
        nonlocal total
        if isinstance(item, h5py.Dataset) and TAIL in name.split("/")[:-1]:
            total += item.id.get_storage_size()

    file.visititems(add)
    return total


def compact(path: str | os.PathLike, share: float = COMPACT_SHARE) -> bool:
    """Rewrite the closed run at ``path`` compacted when its dead space is at least ``share`` of it.

    Returns:
        whether the file was rewritten.

    Raises:
        OSError: the copy could not be written (the file is left as it was).
        RuntimeError: the copy lost rows (the file is left as it was).
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".compact-tmp")
    try:
        with h5py.File(path, "r") as old:
            if dead_bytes(old) < share * os.path.getsize(path):
                return False
            rows = committed_rows(old)
            new = RunFile.create(str(tmp), json.loads(old.attrs["meta"]), compact=True, scalar_records=rows["scalars"])
            try:
                copy_records(old, str(path), new, None)
            finally:
                new.close(old[RUN_STATUS][()].decode())
        with h5py.File(tmp, "r") as copy:
            if committed_rows(copy) != rows:
                raise RuntimeError(f"the compacted copy of {path} lost rows ({committed_rows(copy)} != {rows})")
        os.replace(tmp, path)
        return True
    finally:
        tmp.unlink(missing_ok=True)
