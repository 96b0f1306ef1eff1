"""Read gradlens runs: ``load(path) -> Run`` with tidy pandas frames ready for seaborn.

The file layout is documented in ``docs/schema.md``. Files are opened in SWMR read mode, so a run that is
still being written, or whose writer was killed, can be read; only committed rows (``n_rows``) are returned.
Each read opens the file afresh, so a ``Run`` of a live file sees the records committed since ``load``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from gradlens.probes.base import Quantity

FORMAT = "gradlens"
SCHEMA_VERSION = 1
# Oldest format that supports SWMR (HDF5 1.10), so files stay readable by any HDF5 >= 1.10.
LIBVER = ("v110", "latest")
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
REQUIRED = ("run/status", "run/last_flush", "probes", "scalars/step", "scalars/name", "scalars/value")


def _first_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def _open_error(path: Path, error: OSError) -> str:
    message = _first_line(error)
    if "signature not found" in message:
        return f"{path} is not an HDF5 file (no HDF5 signature); expected a gradlens run (.h5)"
    return f"{path} cannot be opened as HDF5 ({message}); expected a gradlens run written by gradlens.attach"


def _stored_end(path: Path, offset: int) -> int | None:
    """End-of-file address recorded in a version 2/3 superblock at ``offset``; None for other superblocks."""
    with open(path, "rb") as handle:
        handle.seek(offset)
        head = handle.read(48)
    if head[:8] != HDF5_SIGNATURE or len(head) < 12 or head[8] < 2:
        return None
    width = head[9]  # size of offsets: base address, extension address, end-of-file address, root header
    base = int.from_bytes(head[12 : 12 + width], "little")
    return base + int.from_bytes(head[12 + 2 * width : 12 + 3 * width], "little")


def _validate(path: Path, file: h5py.File) -> None:
    found = file.attrs.get("format")
    found = found.decode() if isinstance(found, bytes) else found
    if found != FORMAT:
        raise ValueError(
            f"{path} is an HDF5 file but not a gradlens run "
            f"(root attribute format={found!r}, expected {FORMAT!r})"
        )
    version = int(file.attrs.get("schema_version", -1))
    if version > SCHEMA_VERSION:
        raise ValueError(
            f"{path} uses gradlens schema version {version}, newer than this gradlens reads "
            f"({SCHEMA_VERSION}); upgrade gradlens"
        )
    missing = [name for name in REQUIRED if name not in file] + (
        ["meta attribute"] if "meta" not in file.attrs else []
    )
    if version < 1 or missing:
        raise ValueError(f"{path} is a damaged gradlens run (schema version {version}, missing {missing})")
    if file["run/status"][()] != b"running":
        # A closed file must be complete; a running one may legitimately end short of its superblock's record.
        end = _stored_end(path, file.userblock_size)
        size = os.path.getsize(path)
        if end is not None and size < end:
            raise ValueError(f"{path} is truncated ({size} bytes, the file records {end}); it cannot be read")


@contextmanager
def open_run_file(path: str | os.PathLike) -> Iterator[h5py.File]:
    """Open a gradlens run read-only (SWMR) after checking that it is one.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: ``path`` is not HDF5, not written by gradlens, written by a newer gradlens, or truncated.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"{path}: no such file; expected a gradlens run (.h5) written by gradlens.attach"
        )
    if path.is_dir():
        raise ValueError(f"{path} is a directory; expected a gradlens run file (.h5)")
    try:
        file = h5py.File(path, "r", swmr=True)
    except OSError as error:
        raise ValueError(_open_error(path, error)) from None
    try:
        _validate(path, file)
        yield file
    finally:
        file.close()


def layer_rows(table: np.ndarray) -> list[dict]:
    """Decode the structured layer table into dicts (name, kind, shape tuple, params int, extra fields)."""
    rows = []
    for record in table:
        row: dict = {}
        for field in table.dtype.names:
            value = record[field]
            if field in ("name", "kind"):
                row[field] = value.decode()
            elif field == "shape":
                row[field] = tuple(json.loads(value))
            elif field == "params":
                row[field] = int(value)
            else:
                row[field] = json.loads(value)
        rows.append(row)
    return rows


def read_layers(file: h5py.File) -> list[dict]:
    """The layer table of an open run, in forward order; empty before the writer's first optimizer step."""
    return layer_rows(file["layers"][()]) if "layers" in file else []


def stored_quantities(file: h5py.File) -> dict[str, dict[str, Quantity]]:
    """Probe name -> {quantity name -> Quantity} as declared in the file, in declaration order."""
    probes: dict[str, dict[str, Quantity]] = {}
    for probe, group in file["probes"].items():
        quantities = {}
        for name in group.attrs["quantities"]:
            dataset = group[name]
            axes = tuple(str(axis) for axis in dataset.attrs["axes"][1:])
            labels = {
                axis: [str(label) for label in dataset.attrs[f"labels_{axis}"]]
                for axis in axes
                if f"labels_{axis}" in dataset.attrs
            }
            quantities[str(name)] = Quantity(
                shape=tuple(int(d) for d in dataset.shape[1:]),
                axes=axes,
                labels=labels,
                dtype=dataset.dtype.name,
            )
        probes[probe] = quantities
    return probes


class Run:
    """One recorded run. Create it with :func:`load`.

    Attributes:
        path: the HDF5 file.
        meta: run metadata: what the writer passed (config, model summary, ...) plus ``versions``
            (gradlens, torch, numpy, h5py, hdf5, python), ``created`` (ISO 8601, UTC) and ``resumed``
            (one entry per resume: step, time, versions, the meta passed then).
        schema_version: version of the file layout.
        layers: the layer table, one row per layer in forward order: name, kind, shape (tuple), params, and
            any extra columns the writer stored.
        probes: names of the recorded probes, in declaration order.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = str(path)
        with self._open() as file:
            self.meta: dict = json.loads(file.attrs["meta"])
            self.schema_version = int(file.attrs["schema_version"])
            rows = read_layers(file)
            self._quantities = stored_quantities(file)
        columns = list(dict.fromkeys(key for row in rows for key in row)) or [
            "name",
            "kind",
            "shape",
            "params",
        ]
        self.layers = pd.DataFrame(rows, columns=columns)
        self.probes: list[str] = list(self._quantities)

    @contextmanager
    def _open(self) -> Iterator[h5py.File]:
        try:
            with open_run_file(self.path) as file:
                yield file
        except (OSError, RuntimeError, KeyError) as error:
            # FileNotFoundError is an OSError raised on purpose before any HDF5 read: keep it.
            if isinstance(error, FileNotFoundError):
                raise
            raise ValueError(
                f"{self.path} is damaged ({_first_line(error)}); expected an intact gradlens run"
            ) from None

    def _rows(self, group: h5py.Group, names: list[str]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Committed steps and committed rows of ``names`` in a table group, checked against truncation."""
        count = int(group["n_rows"][()])
        size = os.path.getsize(self.path)  # after reading n_rows: committed chunks were written before it
        arrays = {}
        for name in ["step", *names]:
            dataset = group[name]
            if dataset.shape[0] < count:
                dataset.refresh()
            if dataset.shape[0] < count:
                raise ValueError(
                    f"{self.path} is damaged: {dataset.name} holds {dataset.shape[0]} rows, {count} committed"
                )
            self._check_chunks(dataset, count, size)
            arrays[name] = dataset[:count]
        return arrays.pop("step"), arrays

    def _check_chunks(self, dataset: h5py.Dataset, count: int, size: int) -> None:
        """Every chunk that holds a committed row must exist and lie inside the file (else: truncated)."""
        if dataset.chunks is None or count == 0:
            return
        missing = set(range(0, count, dataset.chunks[0]))
        for index in range(dataset.id.get_num_chunks()):
            info = dataset.id.get_chunk_info(index)
            if info.byte_offset + info.size <= size:
                missing.discard(info.chunk_offset[0])
        if missing:
            raise ValueError(
                f"{self.path} is truncated or damaged: {dataset.name} lacks the data of rows "
                f"{min(missing)} onwards ({count} rows committed)"
            )

    def _probe(self, probe: str) -> dict[str, Quantity]:
        if probe not in self._quantities:
            raise KeyError(f"{self.path} has no probe {probe!r}; recorded probes: {self.probes}")
        return self._quantities[probe]

    def _labels(self, quantity: Quantity) -> dict[str, list[str]]:
        """Stored labels; a ``layer`` axis without labels gets the layer names when the lengths agree."""
        labels = dict(quantity.labels)
        if "layer" in quantity.axes and "layer" not in labels:
            length = quantity.shape[quantity.axes.index("layer")]
            names = list(self.layers["name"])
            labels["layer"] = names if len(names) == length else [str(i) for i in range(length)]
        return labels

    @property
    def status(self) -> str:
        """``running`` while written (or after its writer was killed); ``finished``/``failed`` once closed."""
        with self._open() as file:
            return file["run/status"][()].decode()

    @property
    def last_flush(self) -> float | None:
        """Unix time of the last committed flush (None before the first); tells a live run from a dead one."""
        with self._open() as file:
            value = float(file["run/last_flush"][()])
        return None if np.isnan(value) else value

    def quantities(self, probe: str) -> dict[str, Quantity]:
        """What ``probe`` records: quantity name -> Quantity (shape, axes, labels, dtype of one record)."""
        return dict(self._probe(probe))

    def frame(self, probe: str) -> pd.DataFrame:
        """Tidy records of ``probe``: columns step, layer, quantity, value.

        Covers every quantity whose axes are ``("layer",)`` (one row per layer) or ``()`` (layer ``""``).
        Rows are ordered by quantity (declaration order), step, then layer in forward order; ``value`` is
        float64. Other quantities (histograms, per-sample arrays) are read with :meth:`array`.
        """
        quantities = {n: q for n, q in self._probe(probe).items() if q.axes in (("layer",), ())}
        with self._open() as file:
            steps, arrays = self._rows(file["probes"][probe], list(quantities))
        parts = []
        for name, quantity in quantities.items():
            labels = np.asarray(self._labels(quantity).get("layer", [""]), dtype=object)
            values = arrays[name].reshape(len(steps), len(labels))
            parts.append(
                pd.DataFrame(
                    {
                        "step": np.repeat(steps, len(labels)),
                        "layer": np.tile(labels, len(steps)),
                        "quantity": name,
                        "value": values.ravel().astype(np.float64),
                    }
                )
            )
        if not parts or not len(steps):
            return pd.DataFrame(
                {
                    "step": np.zeros(0, np.int64),
                    "layer": np.zeros(0, object),
                    "quantity": np.zeros(0, object),
                    "value": np.zeros(0),
                }
            )
        return pd.concat(parts, ignore_index=True)

    def array(
        self, probe: str, quantity: str
    ) -> tuple[np.ndarray, np.ndarray, tuple[str, ...], dict[str, list[str]]]:
        """Every record of one quantity, whatever its axes.

        Returns:
            ``(steps, values, axes, labels)``: steps ``[N]`` int64; values ``[N, *shape]`` in the stored
            dtype; axes names every dimension of ``values``, starting with ``"step"``; labels maps
            axis -> labels.
        """
        declared = self._probe(probe)
        if quantity not in declared:
            raise KeyError(
                f"probe {probe!r} of {self.path} has no quantity {quantity!r}; it has {list(declared)}"
            )
        with self._open() as file:
            steps, arrays = self._rows(file["probes"][probe], [quantity])
        return steps, arrays[quantity], ("step", *declared[quantity].axes), self._labels(declared[quantity])

    def scalars(self) -> pd.DataFrame:
        """Tidy scalars (loss, accuracy, lr, ...): columns step, name, value, in logging order."""
        with self._open() as file:
            steps, arrays = self._rows(file["scalars"], ["name", "value"])
        names = np.array([name.decode() for name in arrays["name"]], dtype=object)
        return pd.DataFrame({"step": steps, "name": names, "value": arrays["value"].astype(np.float64)})

    def __repr__(self) -> str:
        return f"Run({self.path!r}, probes={self.probes}, layers={len(self.layers)})"


def load(path: str | os.PathLike) -> Run:
    """Open a gradlens run (finished, still being written, or left by a killed writer).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: ``path`` is not HDF5, not a gradlens run, from a newer gradlens, truncated or damaged.
    """
    return Run(path)
