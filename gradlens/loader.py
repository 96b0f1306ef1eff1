"""Read gradlens runs: ``load(path) -> Run`` with tidy pandas frames ready for seaborn.

The file layout is defined in :mod:`gradlens.schema` and documented in ``docs/schema.md``. Only committed rows
(``n_rows``) are returned. Each read opens the file afresh, so a ``Run`` of a live file sees the records
committed since ``load``.

Opening never hangs on a damaged file. Before HDF5 sees a file, its superblock is checked here (signature,
end-of-file address, root object address, the "open for write" flags). A closed file is opened normally, so a
damaged one fails at the first bad checksum. A file whose writer is live (or was killed) is opened in SWMR read
mode, where HDF5 retries a metadata read whose checksum fails, with a back-off that doubles from 1 ns, 100
times by default: days of sleep on a truncated file. The loader limits it to ``SWMR_READ_ATTEMPTS`` (about
67 ms of back-off in total; ``H5Pset_metadata_read_attempts``, reached through ctypes as h5py does not wrap
it).
"""

from __future__ import annotations

import ctypes
import functools
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import h5py
import numpy as np
import pandas as pd

from gradlens.schema import (
    EVENT_COLUMNS,
    EVENTS,
    FORMAT,
    HDF5_SIGNATURE,
    N_ROWS,
    READABLE_VERSIONS,
    REQUIRED,
    RUN_LAST_FLUSH,
    RUN_STATUS,
    SUMMARY_BLOCKS,
    SWMR_READ_ATTEMPTS,
    Quantity,
)

SUPERBLOCK_BYTES = 48  # a version 2/3 superblock with 8-byte addresses: what gradlens writes
LIVE_GROWTH_SECONDS = 0.5  # how long a file open for write may stay shorter than its recorded end
READ_RETRIES = 3  # a live reader may catch a chunk while the writer rewrites it: its checksum then fails


class RunFileError(ValueError):
    """A file that is not a readable gradlens run (one line naming the file and what is wrong)."""


def _first_line(error: BaseException) -> str:
    text = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
    return text.strip().splitlines()[0] if text.strip() else type(error).__name__


def damaged(path: str | os.PathLike, error: BaseException) -> RunFileError:
    """The one-line error for a file HDF5 failed to read: truncated when it is shorter than it records."""
    try:
        block, size = superblock(path), os.path.getsize(path)
    except (OSError, ValueError):
        block, size = None, 0
    if block is not None and size < block.eof:
        return RunFileError(
            f"{path} is truncated ({size} bytes, the file records {block.eof}; {_first_line(error)}); "
            "it cannot be read"
        )
    return RunFileError(f"{path} is damaged ({_first_line(error)}); expected an intact gradlens run")


class Superblock(NamedTuple):
    """What a version 2/3 HDF5 superblock records (offsets in bytes)."""

    version: int
    flags: int  # file consistency flags: 0 when closed; bit 0 open for write, bit 2 SWMR write
    eof: int  # the end-of-file address the writer recorded
    root: int  # address of the root group's object header


def superblock(path: str | os.PathLike) -> Superblock | None:
    """Read the superblock at the start of ``path`` without HDF5; None for versions 0/1 (not gradlens).

    Raises:
        RunFileError: the file is empty, has no HDF5 signature at offset 0 (and none at the userblock
            offsets 512, 1024, ... either), or ends inside its superblock.
    """
    path = Path(path)
    with open(path, "rb") as handle:
        head = handle.read(SUPERBLOCK_BYTES)
        if head[:8] != HDF5_SIGNATURE:
            size = os.fstat(handle.fileno()).st_size
            offset = 512
            while offset + 8 <= size:  # HDF5 also looks behind a user block of 512 * 2**k bytes
                handle.seek(offset)
                if handle.read(8) == HDF5_SIGNATURE:
                    return None
                offset *= 2
            what = "is empty" if size == 0 else "has no HDF5 signature"
            raise RunFileError(f"{path} is not an HDF5 file ({what}); expected a gradlens run (.h5)")
    if len(head) < 9 or head[8] < 2:
        if len(head) < 9:
            raise RunFileError(f"{path} is truncated ({len(head)} bytes, inside its superblock); it cannot be read")
        return None
    width = head[9] if len(head) > 9 else 0
    needed = 12 + 4 * width + 4
    if width not in (2, 4, 8) or len(head) < needed:
        if len(head) < needed and width in (2, 4, 8):
            raise RunFileError(f"{path} is truncated ({len(head)} bytes, inside its superblock); it cannot be read")
        raise RunFileError(f"{path} has a damaged HDF5 superblock (offset size {width}); it cannot be read")

    def address(i: int) -> int:
        return int.from_bytes(head[12 + i * width : 12 + (i + 1) * width], "little")

    base = address(0)
    return Superblock(version=head[8], flags=head[11], eof=base + address(2), root=base + address(3))


@functools.cache
def _hdf5_library() -> ctypes.CDLL | None:
    """The HDF5 library h5py itself loaded (never another copy), or None where it cannot be found."""
    loaded = []
    try:
        with open("/proc/self/maps") as maps:
            loaded = sorted({line.split()[-1] for line in maps if "/libhdf5" in line and "_hl" not in line})
    except OSError:
        pass
    candidates = loaded or sorted(
        str(p) for p in Path(h5py.__file__).parent.parent.glob("h5py*/**/libhdf5*") if "_hl" not in p.name
    )
    for candidate in candidates:
        try:
            library = ctypes.CDLL(candidate, mode=getattr(os, "RTLD_NOLOAD", 0) | ctypes.RTLD_LOCAL)
            version = (ctypes.c_uint(), ctypes.c_uint(), ctypes.c_uint())
            library.H5get_libversion(*(ctypes.byref(v) for v in version))
            if tuple(v.value for v in version) != h5py.version.hdf5_version_tuple[:3]:
                continue
            setter = library.H5Pset_metadata_read_attempts
        except (OSError, AttributeError):
            continue
        setter.argtypes = [ctypes.c_int64, ctypes.c_uint]
        setter.restype = ctypes.c_int
        return library
    return None


def _swmr_file(path: Path) -> h5py.File:
    """Open ``path`` for SWMR reading with at most ``SWMR_READ_ATTEMPTS`` tries per metadata read."""
    library = _hdf5_library()
    if library is None:
        return h5py.File(path, "r", swmr=True)
    fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    if library.H5Pset_metadata_read_attempts(fapl.id, SWMR_READ_ATTEMPTS) < 0:
        return h5py.File(path, "r", swmr=True)
    flags = h5py.h5f.ACC_RDONLY | h5py.h5f.ACC_SWMR_READ
    return h5py.File(h5py.h5f.open(os.fsencode(path), flags, fapl=fapl))


def _open_hdf5(path: Path) -> h5py.File:
    """Check the superblock, then open: a closed file normally, a file open for write (live or killed) SWMR."""
    block = superblock(path)
    size = os.path.getsize(path)
    if block is not None:
        if block.root + 4 > size:
            raise RunFileError(
                f"{path} is truncated ({size} bytes, the root group lies at byte {block.root}); it cannot be read"
            )
        deadline = time.monotonic() + LIVE_GROWTH_SECONDS
        while size < block.eof and block.flags != 0 and time.monotonic() < deadline:
            # A live writer may be between recording a new end and writing up to it: wait while the file
            # changes. A file that does not (a copy, a killed writer's file) is truncated.
            time.sleep(0.02)
            seen = (block, size)
            block, size = superblock(path) or block, os.path.getsize(path)
            if (block, size) == seen:
                break
        if size < block.eof:
            # Checked here because HDF5 skips it for SWMR reads, and reading past the end can hang HDF5 for
            # good (a global heap read as zeros is a loop without progress in its parser).
            raise RunFileError(f"{path} is truncated ({size} bytes, the file records {block.eof}); it cannot be read")
    try:
        if block is None or block.flags == 0:
            return h5py.File(path, "r")
        return _swmr_file(path)
    except OSError as error:
        message = _first_line(error)
        if "signature not found" in message:
            raise RunFileError(
                f"{path} is not an HDF5 file (no HDF5 signature); expected a gradlens run (.h5)"
            ) from None
        if block is not None and size < block.eof:
            raise damaged(path, error) from None
        raise RunFileError(
            f"{path} cannot be opened as HDF5 ({message}); expected a gradlens run written by gradlens.attach"
        ) from None


def _validate(path: Path, file: h5py.File) -> None:
    found = file.attrs.get("format")
    found = found.decode() if isinstance(found, bytes) else found
    if found != FORMAT:
        raise RunFileError(
            f"{path} is an HDF5 file but not a gradlens run "
            f"(root attribute format={found!r}, expected {FORMAT!r})"
        )
    version = int(file.attrs.get("schema_version", -1))
    if version > max(READABLE_VERSIONS):
        raise RunFileError(
            f"{path} uses gradlens schema version {version}, newer than this gradlens reads "
            f"({max(READABLE_VERSIONS)}); upgrade gradlens"
        )
    missing = [name for name in REQUIRED.get(version, ()) if name not in file] + (
        ["meta attribute"] if "meta" not in file.attrs else []
    )
    if version not in READABLE_VERSIONS or missing:
        raise RunFileError(f"{path} is a damaged gradlens run (schema version {version}, missing {missing})")


@contextmanager
def open_run_file(path: str | os.PathLike) -> Iterator[h5py.File]:
    """Open a gradlens run read-only after checking that it is one; never hangs on a damaged file.

    A closed run is opened normally; one whose writer is live or was killed in SWMR read mode.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError (RunFileError): ``path`` is not HDF5, not written by gradlens, written by a newer gradlens,
            truncated or damaged.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"{path}: no such file; expected a gradlens run (.h5) written by gradlens.attach"
        )
    if path.is_dir():
        raise RunFileError(f"{path} is a directory; expected a gradlens run file (.h5)")
    file = _open_hdf5(path)
    try:
        try:
            _validate(path, file)
        except RunFileError:
            raise
        except Exception as error:  # a damaged file fails in HDF5 in many ways
            raise damaged(path, error) from None
        yield file
    finally:
        file.close()


def check_committed(path: str | os.PathLike, dataset: h5py.Dataset, count: int, size: int) -> None:
    """Every chunk that holds one of the first ``count`` rows must exist and lie inside the file's ``size``.

    Raises:
        RunFileError: a chunk is missing or lies past the end (a truncated file: HDF5 would read fill values).
    """
    if dataset.chunks is None or count == 0:
        return
    missing = set(range(0, count, dataset.chunks[0]))
    for index in range(dataset.id.get_num_chunks()):
        info = dataset.id.get_chunk_info(index)
        if info.byte_offset + info.size <= size:
            missing.discard(info.chunk_offset[0])
    if missing:
        raise RunFileError(
            f"{path} is truncated or damaged: {dataset.name} lacks the data of rows "
            f"{min(missing)} onwards ({count} rows committed)"
        )


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


class Summary(NamedTuple):
    """Per block of consecutive records: what a screen draws of a long run (see :meth:`Run.summary`).

    Blocks hold ``block`` records each (a power of two; 1 = every record), aligned to the run's record index
    (block ``k`` holds records ``k*block .. (k+1)*block - 1``); the first and last block of a range may hold
    fewer. Every array's first axis is the block; the value arrays are ``[B, *shape]`` of one record.

    Attributes:
        block: records per (full) block.
        first_step, last_step: ``[B]`` int64, the steps of the first and last record of each block.
        count: ``[B]`` int64, the records in each block.
        min, max: ``[B, *shape]`` in the quantity's dtype; NaN is ignored (NaN only where every record of the
            block is NaN); ±Inf counts.
        mean: ``[B, *shape]`` float64, the mean over the block's records: NaN or ±Inf as soon as one record
            of the block is non-finite (so a non-finite record is never hidden by a block).
        last: ``[B, *shape]`` in the quantity's dtype, the block's last record.
    """

    block: int
    first_step: np.ndarray
    last_step: np.ndarray
    count: np.ndarray
    min: np.ndarray
    max: np.ndarray
    mean: np.ndarray
    last: np.ndarray


def summary_block(records: tuple[int, int], points: int) -> int:
    """The coarsest block (1 or one of ``SUMMARY_BLOCKS``) that still gives >= ``points`` blocks over ``records``.

    ``records`` = ``(i0, i1)``, the half-open range of record indices; blocks are aligned to multiples of the
    block size, so a range cut mid-block counts its partial first and last blocks.
    """
    if int(points) < 1:
        raise ValueError(f"points must be >= 1, got {points!r}")
    i0, i1 = records
    chosen = 1
    for block in SUMMARY_BLOCKS:
        if i1 > i0 and (i1 - 1) // block - i0 // block + 1 >= points:
            chosen = block
    return chosen


def summarise(steps: np.ndarray, values: np.ndarray, first_record: int, block: int) -> Summary:
    """The :class:`Summary` of consecutive records (``steps [n]``, ``values [n, *shape]``), the first of which
    has record index ``first_record``; blocks are aligned to multiples of ``block`` in record index.

    mean = (1/count) Σ values over the block in float64; min/max ignore NaN (``numpy.fmin``/``fmax``).
    """
    n = len(steps)
    shape = values.shape[1:]
    if n == 0:
        empty = np.zeros((0, *shape), dtype=values.dtype)
        return Summary(
            block, np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64), empty, empty.copy(),
            np.zeros((0, *shape)), empty.copy(),
        )
    aligned = (-first_record) % block  # position of the first block boundary inside the rows
    starts = np.unique(np.r_[0, np.arange(aligned, n, block)]).astype(np.intp)
    ends = np.r_[starts[1:], n]
    count = (ends - starts).astype(np.int64)
    total = np.add.reduceat(values.astype(np.float64), starts, axis=0)
    return Summary(
        block=block,
        first_step=np.asarray(steps[starts], dtype=np.int64),
        last_step=np.asarray(steps[ends - 1], dtype=np.int64),
        count=count,
        min=np.fmin.reduceat(values, starts, axis=0),
        max=np.fmax.reduceat(values, starts, axis=0),
        mean=total / count.reshape((-1,) + (1,) * len(shape)),
        last=values[ends - 1],
    )


def record_range(steps: np.ndarray, start: int | None, stop: int | None) -> tuple[int, int]:
    """The half-open record range ``(i0, i1)`` whose steps lie in ``[start, stop)`` (steps non-decreasing)."""
    i0 = 0 if start is None else int(np.searchsorted(steps, int(start), "left"))
    i1 = len(steps) if stop is None else int(np.searchsorted(steps, int(stop), "left"))
    return i0, max(i0, i1)


def _check_stride(stride: int | None) -> int:
    if stride is None:
        return 1
    if int(stride) < 1:
        raise ValueError(f"stride must be >= 1 (every stride-th record), got {stride!r}")
    return int(stride)


def _scalar_range(steps: np.ndarray, start: int | None, stop: int | None) -> tuple[int, int]:
    """Records of one scalar from the first with ``step >= start`` to the last with ``step < stop``."""
    inside = np.ones(len(steps), dtype=bool)
    if start is not None:
        inside &= steps >= int(start)
    if stop is not None:
        inside &= steps < int(stop)
    found = np.flatnonzero(inside)
    return (int(found[0]), int(found[-1]) + 1) if len(found) else (0, 0)


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
        except (FileNotFoundError, RunFileError):
            raise  # raised on purpose, one line naming the file
        except Exception as error:  # HDF5 reports a damaged file in many ways
            raise damaged(self.path, error) from None

    def _rows(self, group: h5py.Group, names: list[str]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Committed steps and committed rows of ``names`` in a table group, checked against truncation."""
        count = int(group[N_ROWS][()])
        size = os.path.getsize(self.path)  # after reading n_rows: committed chunks were written before it
        live = bool(group.file.swmr_mode)
        arrays = {}
        for name in ["step", *names]:
            dataset = group[name]
            if dataset.shape[0] < count:
                dataset.refresh()
            if dataset.shape[0] < count:
                raise RunFileError(
                    f"{self.path} is damaged: {dataset.name} holds {dataset.shape[0]} rows, {count} committed"
                )
            check_committed(self.path, dataset, count, size)
            arrays[name] = self._read(dataset, count, retries=READ_RETRIES if live else 1)
        return arrays.pop("step"), arrays

    def _read(self, dataset: h5py.Dataset, count: int, retries: int) -> np.ndarray:
        """Rows ``[:count]``; a chunk whose checksum fails is damaged, unless the live writer was rewriting it."""
        for attempt in range(retries):
            try:
                return dataset[:count]
            except OSError as error:
                if attempt + 1 == retries:
                    raise RunFileError(
                        f"{self.path} is damaged: {dataset.name} fails its checksum ({_first_line(error)})"
                    ) from None
                time.sleep(0.05)
                dataset.refresh()
        raise AssertionError("unreachable")

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
            return file[RUN_STATUS][()].decode()

    @property
    def last_flush(self) -> float | None:
        """Unix time of the last committed flush (None before the first); tells a live run from a dead one."""
        with self._open() as file:
            value = float(file[RUN_LAST_FLUSH][()])
        return None if np.isnan(value) else value

    def quantities(self, probe: str) -> dict[str, Quantity]:
        """What ``probe`` records: quantity name -> Quantity (shape, axes, labels, dtype of one record)."""
        return dict(self._probe(probe))

    def n_records(self, probe: str) -> int:
        """The committed records of ``probe`` (one per firing), read from the file's counter."""
        self._probe(probe)
        with self._open() as file:
            return int(file["probes"][probe][N_ROWS][()])

    def span(self, probe: str) -> tuple[int, int] | None:
        """The steps of the first and the last committed record of ``probe``; None before the first record."""
        steps = self.steps(probe)
        return (int(steps[0]), int(steps[-1])) if len(steps) else None

    def steps(
        self, probe: str, start: int | None = None, stop: int | None = None, stride: int | None = None
    ) -> np.ndarray:
        """The steps ``[n]`` (int64) of the records of ``probe`` with ``start <= step < stop``, every ``stride``-th.

        ``start``/``stop`` are optimizer steps (None: from the first / to the last record); ``stride`` counts
        records of that range (its first record always included).
        """
        self._probe(probe)
        stride = _check_stride(stride)
        with self._open() as file:
            steps = self._rows(file["probes"][probe], [])[0]
        i0, i1 = record_range(steps, start, stop)
        return steps[i0:i1:stride]

    def frame(
        self,
        probe: str,
        start: int | None = None,
        stop: int | None = None,
        stride: int | None = None,
        layers: list[str | int] | None = None,
    ) -> pd.DataFrame:
        """Tidy records of ``probe``: columns step, layer, quantity, value.

        Covers every quantity whose axes are ``("layer",)`` (one row per layer) or ``()`` (layer ``""``).
        Rows are ordered by quantity (declaration order), step, then layer in forward order; ``value`` is
        float64. Other quantities (histograms, per-sample arrays) are read with :meth:`array`. ``start``,
        ``stop``, ``stride`` and ``layers`` select as in :meth:`array` (``layers`` does not filter ``()``).
        """
        quantities = {n: q for n, q in self._probe(probe).items() if q.axes in (("layer",), ())}
        parts = []
        for name, quantity in quantities.items():
            steps, values, _, labels = self.array(
                probe, name, start, stop, stride, layers=layers if quantity.axes else None
            )
            names = np.asarray(labels.get("layer", [""]), dtype=object)
            values = values.reshape(len(steps), len(names))
            parts.append(
                pd.DataFrame(
                    {
                        "step": np.repeat(steps, len(names)),
                        "layer": np.tile(names, len(steps)),
                        "quantity": name,
                        "value": values.ravel().astype(np.float64),
                    }
                )
            )
        if not parts or not sum(len(part) for part in parts):
            return pd.DataFrame(
                {
                    "step": np.zeros(0, np.int64),
                    "layer": np.zeros(0, object),
                    "quantity": np.zeros(0, object),
                    "value": np.zeros(0),
                }
            )
        return pd.concat(parts, ignore_index=True)

    def _quantity(self, probe: str, quantity: str) -> Quantity:
        declared = self._probe(probe)
        if quantity not in declared:
            raise KeyError(
                f"probe {probe!r} of {self.path} has no quantity {quantity!r}; it has {list(declared)}"
            )
        return declared[quantity]

    def _layer_index(self, quantity: Quantity, labels: dict[str, list[str]], layers: list[str | int]) -> np.ndarray:
        """Positions along the ``layer`` axis of ``layers`` (names or indices), in the order given."""
        if "layer" not in quantity.axes:
            raise ValueError(f"layers={layers!r} selects along a 'layer' axis; this quantity has axes {quantity.axes}")
        names = labels["layer"]
        position = {name: i for i, name in enumerate(names)}
        index = []
        for layer in layers:
            if isinstance(layer, str):
                if layer not in position:
                    raise KeyError(f"{self.path} has no layer {layer!r}; layers are {names[:5]}... ({len(names)})")
                index.append(position[layer])
            elif isinstance(layer, int | np.integer) and -len(names) <= int(layer) < len(names):
                index.append(int(layer) % len(names))
            else:
                raise KeyError(f"layer {layer!r} is neither a layer name nor an index below {len(names)}")
        return np.asarray(index, dtype=np.intp)

    def array(
        self,
        probe: str,
        quantity: str,
        start: int | None = None,
        stop: int | None = None,
        stride: int | None = None,
        layers: list[str | int] | None = None,
    ) -> tuple[np.ndarray, np.ndarray, tuple[str, ...], dict[str, list[str]]]:
        """The records of one quantity, whatever its axes: all of them, or a step range, a stride, some layers.

        Args:
            probe, quantity: what to read.
            start, stop: optimizer steps; records with ``start <= step < stop`` (None: no bound).
            stride: every ``stride``-th record of that range, starting with its first (None: every record).
            layers: layer names or indices along the quantity's ``layer`` axis, in the order wanted (None: all).

        Returns:
            ``(steps, values, axes, labels)``: steps ``[N]`` int64; values ``[N, *shape]`` in the stored
            dtype; axes names every dimension of ``values``, starting with ``"step"``; labels maps
            axis -> labels (the ``layer`` labels of the selected layers).
        """
        declared = self._quantity(probe, quantity)
        stride = _check_stride(stride)
        labels = self._labels(declared)
        index = None if layers is None else self._layer_index(declared, labels, layers)
        with self._open() as file:
            steps, arrays = self._rows(file["probes"][probe], [quantity])
        i0, i1 = record_range(steps, start, stop)
        values = arrays[quantity][i0:i1:stride]
        if index is not None:
            axis = declared.axes.index("layer")
            values = np.take(values, index, axis=1 + axis)
            labels["layer"] = [labels["layer"][i] for i in index]
        return steps[i0:i1:stride], values, ("step", *declared.axes), labels

    def summary(
        self,
        probe: str,
        quantity: str,
        points: int = 2000,
        start: int | None = None,
        stop: int | None = None,
        layers: list[str | int] | None = None,
    ) -> Summary:
        """min / max / mean / last of ``quantity`` per block of records: what a screen of ``points`` pixels needs.

        The block is the coarsest of 1 and ``schema.SUMMARY_BLOCKS`` (32, 128, 512, ... records) that still
        gives at least ``points`` blocks over the records with ``start <= step < stop``: between ``points``
        and 4 × ``points`` blocks (all records when there are fewer). Files of schema version 3 keep these
        blocks for every ``("layer",)`` and ``()`` quantity, so the cost does not grow with the run: the
        stored blocks are read, and only the partial blocks at either end of the range are computed from
        their records. Other quantities and older files are summarised from their records (the same values).

        Returns:
            a :class:`Summary` with arrays ``[B, *shape]`` (``layers`` selects as in :meth:`array`).
        """
        steps, values, _, _ = self.array(probe, quantity, start, stop, layers=layers)
        with self._open() as file:
            all_steps = self._rows(file["probes"][probe], [])[0]
        i0, i1 = record_range(all_steps, start, stop)
        return summarise(steps, values, i0, summary_block((i0, i1), points))

    def scalars(self) -> pd.DataFrame:
        """Tidy scalars (loss, accuracy, lr, ...): columns step, name, value, in logging order."""
        with self._open() as file:
            steps, arrays = self._rows(file["scalars"], ["name", "value"])
        names = np.array([name.decode() for name in arrays["name"]], dtype=object)
        return pd.DataFrame({"step": steps, "name": names, "value": arrays["value"].astype(np.float64)})

    def scalar_names(self) -> list[str]:
        """The names of the logged scalars, in the order they were first logged."""
        return list(dict.fromkeys(self.scalars()["name"]))

    def _scalar_records(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        scalars = self.scalars()
        rows = scalars[scalars["name"] == name]
        if rows.empty and name not in self.scalar_names():
            raise KeyError(f"{self.path} has no scalar {name!r}; logged scalars: {self.scalar_names()}")
        return rows["step"].to_numpy(np.int64), rows["value"].to_numpy(np.float64)

    def scalar(
        self, name: str, start: int | None = None, stop: int | None = None, stride: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """One logged scalar: ``(steps [n] int64, values [n] float64)`` in logging order.

        ``start``/``stop``/``stride`` select as in :meth:`array`: the records of ``name`` from the first with
        ``step >= start`` to the last with ``step < stop`` (steps of one name are expected to grow), every
        ``stride``-th.
        """
        stride = _check_stride(stride)
        steps, values = self._scalar_records(name)
        i0, i1 = _scalar_range(steps, start, stop)
        return steps[i0:i1:stride], values[i0:i1:stride]

    def scalar_summary(
        self, name: str, points: int = 2000, start: int | None = None, stop: int | None = None
    ) -> Summary:
        """:meth:`summary` of one logged scalar (blocks of its records; arrays ``[B]``)."""
        steps, values = self._scalar_records(name)
        i0, i1 = _scalar_range(steps, start, stop)
        return summarise(steps[i0:i1], values[i0:i1], i0, summary_block((i0, i1), points))

    def events(self) -> pd.DataFrame:
        """What happened during the run besides records: columns step, kind, source, message, in order.

        Kinds: ``probe_error`` (source: the probe; message: ``"ExcType: first line"``), ``probe_disabled``,
        ``step_skipped`` (source ``GradScaler``), ``warning``. Files of schema version 1 have none (empty frame).
        """
        columns = list(EVENT_COLUMNS)
        with self._open() as file:
            if EVENTS not in file:
                steps, arrays = np.zeros(0, np.int64), {name: np.zeros(0, "S1") for name in columns}
            else:
                steps, arrays = self._rows(file[EVENTS], columns)
        frame = {"step": steps.astype(np.int64)}
        for name in columns:
            frame[name] = np.array([value.decode(errors="replace") for value in arrays[name]], dtype=object)
        return pd.DataFrame(frame)

    def __repr__(self) -> str:
        return f"Run({self.path!r}, probes={self.probes}, layers={len(self.layers)})"


def load(path: str | os.PathLike) -> Run:
    """Open a gradlens run (finished, still being written, or left by a killed writer).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: ``path`` is not HDF5, not a gradlens run, from a newer gradlens, truncated or damaged
            (a one-line ``RunFileError``, within a fraction of a second even for a damaged file).
    """
    return Run(path)
