"""Open a gradlens run file safely: check it is one, never hang on a damaged one, decode its layer table.

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
from typing import NamedTuple, TypeVar

import h5py
import numpy as np
from h5py._objects import phil  # h5py's global lock around every HDF5 call

from gradlens.lock import writer
from gradlens.schema import (
    FORMAT,
    HDF5_SIGNATURE,
    READABLE_VERSIONS,
    REQUIRED,
    SWMR_READ_ATTEMPTS,
    Quantity,
)

SUPERBLOCK_BYTES = 48  # a version 2/3 superblock with 8-byte addresses: what gradlens writes
LIVE_GROWTH_SECONDS = 0.5  # how long a file open for write may stay shorter than its recorded end
# A read of a file whose writer is alive that fails (HDF5 gave up on a metadata entry the writer was rewriting,
# the file was caught between recording a new end and growing to it, a chunk kept changing) is tried again,
# from a fresh open, for this long; a busy machine can stall the writer mid-write for a good fraction of a second.
LIVE_RETRY_SECONDS = 30.0
LIVE_RETRY_PAUSE = 0.05
Method = TypeVar("Method")


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
            with phil:  # see _swmr_file
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
    with phil:  # HDF5 is not thread-safe and ctypes releases the GIL: hold h5py's lock, as every h5py call does
        failed = library.H5Pset_metadata_read_attempts(fapl.id, SWMR_READ_ATTEMPTS) < 0
    if failed:
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


def retried_while_written(method: Method) -> Method:
    """``method(self, ...)`` (a read of the run at ``self.path``) tried again while it fails with a
    :class:`RunFileError` and a live writer holds the file's lock, for up to ``LIVE_RETRY_SECONDS``.

    A live reader must never fail on a healthy file being written, however busy the machine: SWMR readers see
    the writer's metadata and rows change under them, and HDF5 retries a torn metadata read only ~67 ms
    (``SWMR_READ_ATTEMPTS``), the superblock's end of file is recorded before the file grows to it, and a tail
    may be rewritten between two reads. A file nobody writes (closed, or left by a killed writer) fails at once:
    nothing in it will change.
    """

    @functools.wraps(method)
    def retried(self, *args, **kwargs):
        deadline = None
        while True:
            try:
                return method(self, *args, **kwargs)
            except RunFileError:
                deadline = deadline or time.monotonic() + LIVE_RETRY_SECONDS
                if time.monotonic() >= deadline or writer(self.path) is None:
                    raise
                time.sleep(LIVE_RETRY_PAUSE)

    return retried


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
