"""Computed results (not training runs) in HDF5: named arrays plus the configuration that made them.

Training runs are written by the recorder (``gradlens.attach``) and read with ``gradlens.load``. Analyses
that compute rather than train (a Monte Carlo sweep, a curve, a model's schematic graph) store their arrays
here, with the same ``meta`` convention, so figures read every input from HDF5.

Layout: root attributes ``format = "gradlens-result"``, ``schema_version``, ``meta`` (JSON, with the
configuration under ``"config"``), ``status`` (``"finished"`` once every array is written); one dataset per
array at its name (``/sweep/n/mean``: "/" makes groups).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

FORMAT = "gradlens-result"
SCHEMA_VERSION = 1


@dataclass
class Result:
    """A stored result: ``meta`` (dict) and ``arrays`` (name -> ndarray)."""

    path: str
    meta: dict
    arrays: dict[str, np.ndarray]
    status: str

    def __getitem__(self, name: str) -> np.ndarray:
        try:
            return self.arrays[name]
        except KeyError:
            raise KeyError(f"{self.path} has no array {name!r}; it holds {sorted(self.arrays)}") from None


def save_result(
    path: str | os.PathLike, meta: Mapping, arrays: Mapping[str, np.ndarray], overwrite: bool = False
) -> None:
    """Write ``arrays`` and ``meta`` to ``path``; an existing file is refused unless ``overwrite``.

    The file is written under a temporary name and renamed into place, so a crash never leaves a partial
    result under ``path``.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True (CLI: --force) to replace it")
    tmp = path.with_name(path.name + ".tmp")
    with h5py.File(tmp, "w") as file:
        file.attrs["format"] = FORMAT
        file.attrs["schema_version"] = SCHEMA_VERSION
        file.attrs["meta"] = json.dumps(dict(meta))
        for name, values in arrays.items():
            values = np.asarray(values)
            if values.dtype.kind == "U":
                values = values.astype(h5py.string_dtype())
            file.create_dataset(name, data=values)
        file.attrs["status"] = "finished"
    os.replace(tmp, path)


def load_result(path: str | os.PathLike) -> Result:
    """Read a result written by :func:`save_result`; a clear error for anything else."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; expected a gradlens result file")
    try:
        file = h5py.File(path, "r")
    except OSError as error:
        raise ValueError(f"{path} cannot be opened as HDF5 ({error}); expected a gradlens result file") from None
    with file:
        found = file.attrs.get("format")
        if found != FORMAT:
            raise ValueError(f"{path} is not a gradlens result (format={found!r}, expected {FORMAT!r})")
        arrays: dict[str, np.ndarray] = {}

        def keep(name: str, item: object) -> None:
            if isinstance(item, h5py.Dataset):
                values = item[()]
                if item.dtype.kind == "O":
                    values = item.asstr()[()]
                arrays[name] = np.asarray(values)

        file.visititems(keep)
        return Result(str(path), json.loads(file.attrs["meta"]), arrays, str(file.attrs.get("status", "")))
