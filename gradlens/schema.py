"""The on-disk format of a gradlens run: the one module that defines it (documented in ``docs/schema.md``).

The recorder (writer), the loader (reader) and the probes (which declare :class:`Quantity`) all import this
module; it imports only the standard library and numpy, and none of them, so the format has one definition
and no import cycle.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

FORMAT = "gradlens"  # root attribute ``format``: how the loader recognises its files
# 2 adds the required /events table; 3 stores whole chunks compressed (the rows of a run being written that
# do not fill a chunk yet wait in each table's /tail), float32 GradStats statistics, int32 counts, and the
# multi-resolution summary. 4 stores summary blocks of 128 records and more, float32 ones at display precision
# (``display_precision``), and closes a small run compacted (no tails, one layer per chunk, ``compact`` below).
# 5 adds /scalars/by_name: the records of each of the first SCALAR_SLOTS logged names in a table of its own.
# Files of versions 1 to 4 stay readable.
SCHEMA_VERSION = 5
READABLE_VERSIONS = (1, 2, 3, 4, 5)
# Oldest format that supports SWMR (HDF5 1.10), so files stay readable by any HDF5 >= 1.10.
LIBVER = ("v110", "latest")
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"

# /run/status values. "interrupted" is written only by ``gradlens repair`` (a writer that never closed).
STATUS_RUNNING = "running"
STATUS_FINISHED = "finished"
STATUS_FAILED = "failed"
STATUS_INTERRUPTED = "interrupted"
STATUS_STOPPED = "stopped"  # the live doctor ended training on purpose (attach(..., stop_on="severe"))
CLOSE_STATUSES = (STATUS_FINISHED, STATUS_FAILED, STATUS_STOPPED)
STATUS_DTYPE = "S16"

# Groups and datasets.
RUN_STATUS = "run/status"
RUN_LAST_FLUSH = "run/last_flush"
LAYERS = "layers"
PROBES = "probes"
SCALARS = "scalars"
EVENTS = "events"
NAMES = "scalars/names"  # version 3: each logged scalar name once, in first-logged order
# Version 5: /scalars/by_name/<k>/ holds the steps and values of the k-th name of /scalars/names (k <
# SCALAR_SLOTS), so that reading one scalar reads its records only, not the long-format /scalars table of every
# name (10**6 steps x 10 names: 640 MB of names to scan). SWMR writers cannot create datasets, so a file being
# written has its SCALAR_SLOTS tables from the start (+53 KB, +12 ms at creation); a compacted file has one per
# name logged. Names logged after the slots ran out are found by scanning /scalars, as in older files.
BY_NAME = "scalars/by_name"
SCALAR_SLOTS = 32
STEP = "step"  # every table: the optimizer step of each row
N_ROWS = "n_rows"  # every table: committed rows; readers stop there
TAIL = "tail"  # version 3, every table: the rows of the unfinished chunk of each column while the file is written
SUMMARY = "summary"  # version 3: probes/<probe>/summary/<block>/ and scalars/summary/<block>/ (block tables)
LAST_STEP = "last_step"  # block tables: the step of the block's last record (``step`` holds its first)
RESERVED_DATASETS = frozenset({STEP, N_ROWS, TAIL, SUMMARY})
LAYER_FIELDS = ("name", "kind", "shape", "params")

# Table columns: name -> fixed-length byte-string width (UTF-8, longer values are cut at a character).
NAME_BYTES = 64  # /scalars/name
EVENT_COLUMNS = {"kind": 32, "source": 256, "message": 1024}
# Event kinds the library writes (others may be added; a kind is any short identifier).
EVENT_KINDS = ("probe_error", "probe_disabled", "step_skipped", "warning")

_REQUIRED_1 = (RUN_STATUS, RUN_LAST_FLUSH, PROBES, "scalars/step", "scalars/name", "scalars/value")
_REQUIRED_2 = (*_REQUIRED_1, "events/step", "events/kind", "events/source", "events/message")
REQUIRED = {
    1: _REQUIRED_1,
    2: _REQUIRED_2,
    3: (*_REQUIRED_2, "scalars/tail", "scalars/summary", NAMES),
    4: (*_REQUIRED_2, "scalars/summary", NAMES),  # a compacted file has no tails
    5: (*_REQUIRED_2, "scalars/summary", NAMES, BY_NAME),
}

# Rows per chunk aim at this many bytes; every row dataset carries a Fletcher-32 checksum per chunk, so a
# damaged chunk is an error on reading, never a silently wrong number.
CHUNK_BYTES = 64 * 1024
# Version 3: a record whose first axis is "layer" is chunked by groups of this many layers, so reading one
# parameter's history decompresses 8 layers' worth, not the whole model's (150 parameters: 1/19 of it).
LAYER_GROUP = 8
MAX_CHUNK_ROWS = 4096
# Version 3: the unfinished chunk of a column (in memory and in its tail, dead space once the run is closed)
# holds at most this many bytes of records: 436 rows of 150 float32 values.
TAIL_BYTES = 256 * 1024
MIN_CHUNK_ROWS = 16
# Version 3 tail datasets (rewritten at every flush) are chunked at about this many bytes.
TAIL_CHUNK_BYTES = 16 * 1024
# Multi-resolution summary: min / max / mean / last per block of this many consecutive records of a
# probe quantity (or of one scalar). Factors of 4 keep the levels' total at 4/3 of the finest while a screen
# that asks for P points gets between P and 4P blocks; runs shorter than 32 * P records are summarised from
# their records (<= 64 000 rows at P = 2000). Eight levels, up to 32 * 4**7 = 524 288 records per block, give
# >= 1900 blocks for runs of 10**9 records.
SUMMARY_BLOCKS = tuple(32 * 4**level for level in range(8))
# Version 4 stores the levels from 128 records on; blocks of 32 are made from the records when a screen asks
# for them (runs of 32 P .. 128 P records: one pass over the quantity's records). Stored blocks of 32 cost
# 2.1 of the 16.2 bytes a GradStats parameter took per step at 10**4 steps (version 3); from 128 on, at
# display precision, 0.24 (measured on benchmarks/long_runs.py's run).
STORED_BLOCKS = SUMMARY_BLOCKS[1:]
# Summary blocks of float32 quantities are for drawing and for decade-scale diagnosis: their min, max, mean
# and last are rounded to DISPLAY_BITS significant bits (relative error <= 2**-DISPLAY_BITS = 0.39 %), which
# leaves the two low bytes of each float32 zero (they compress to nothing after the byte shuffle). The records
# themselves are exact float32; read them (``Run.array``) where exactness matters.
DISPLAY_BITS = 8
SUMMARY_STATS = ("min", "max", "mean", "last")  # the last axis of a stored block
# Block tables are chunked by 32 blocks of whole records (a screen reads every layer at once); the writer keeps
# the unfinished chunk of each in memory: 32 x 150 layers x 4 stats x 4 bytes = 77 KB per quantity and size.
SUMMARY_ROWS = 32
# Metadata reads of a file opened for SWMR reading are retried while a checksum fails (the writer may be
# rewriting that entry), with a back-off that doubles from 1 ns. HDF5's default of 100 attempts turns a
# truncated or damaged file into a sleep of days; 26 attempts wait at most 2**26 ns ~ 67 ms in total.
SWMR_READ_ATTEMPTS = 26
# Version 4: a closed file whose dead space (the tails, unused once closed: SWMR never frees space) is at least
# this share of it is rewritten compacted: no tails, summary levels only as long as the run, and a [layer, ...]
# column chunked one layer at a time (COMPACT_ROWS rows) at deflate level COMPACT_DEFLATE. 10**4 steps x 150
# GradStats parameters: 16.2 -> 12.8 bytes per parameter per step. The tails of 150 GradStats parameters are
# 0.5 % of a run of about 1.3 * 10**5 steps (rewritten at close: one pass over its records); 10**6 x 300
# parameters (0.08 %) keep their layout.
COMPACT_SHARE = 0.005
COMPACT_DEFLATE = 6


def clip_utf8(text: str, width: int) -> bytes:
    """``text`` as UTF-8, cut to at most ``width`` bytes at a character boundary."""
    return text.encode()[:width].decode(errors="ignore").encode()


@dataclass(frozen=True)
class Quantity:
    """One recorded array per firing.

    Attributes:
        shape: shape of one record (the step axis is added by the recorder).
        axes: one name per dimension of ``shape``, e.g. ``("layer",)``, ``("layer", "bin")``, ``("sample",)``.
        labels: optional labels per axis, e.g. ``{"layer": ["fc1", "fc2"]}``; stored in the HDF5 file.
        dtype: numpy dtype name of the stored values.
    """

    shape: tuple[int, ...]
    axes: tuple[str, ...]
    labels: dict[str, list[str]] = field(default_factory=dict)
    dtype: str = "float64"

    def __post_init__(self) -> None:
        if len(self.shape) != len(self.axes):
            raise ValueError(f"Quantity shape {self.shape} and axes {self.axes} differ in length")


def chunk_shape(
    shape: tuple[int, ...], axes: tuple[str, ...], dtype: np.dtype, compact: bool = False
) -> tuple[int, ...]:
    """Chunk of a column of records ``[N, *shape]``: ``(R, g, *shape[1:])``.

    ``g`` = ``LAYER_GROUP`` layers when the first axis is ``layer`` (1 in a ``compact`` file), else the whole
    axis; ``R`` rows so that a chunk holds about ``CHUNK_BYTES`` and (unless ``compact``: no tails) ``R`` whole
    records at most ``TAIL_BYTES`` unless that leaves fewer than ``MIN_CHUNK_ROWS`` (at least 1, at most
    ``MAX_CHUNK_ROWS``).
    """
    itemsize = np.dtype(dtype).itemsize
    record = tuple(int(d) for d in shape)
    row_bytes = max(1, math.prod(record) * itemsize)
    if record and axes and axes[0] == "layer":
        record = (min(record[0], 1 if compact else LAYER_GROUP), *record[1:])
    by_chunk = max(1, min(MAX_CHUNK_ROWS, CHUNK_BYTES // max(1, math.prod(record) * itemsize)))
    if compact:
        return (int(by_chunk), *record)
    # The tail's cap yields to 16 rows for wide records (150 x 40-bin histograms: 48 KB a row), so that a flush
    # of a few dozen records crosses few chunk boundaries (each one a commit of its own).
    rows = max(min(by_chunk, TAIL_BYTES // row_bytes), min(by_chunk, MIN_CHUNK_ROWS))
    return (int(rows), *record)


def tail_chunk_rows(shape: tuple[int, ...], dtype: np.dtype, rows: int) -> int:
    """Rows per chunk of a version 3 tail dataset (``2 * rows`` rows of full records): about ``TAIL_CHUNK_BYTES``."""
    row_bytes = max(1, math.prod(shape) * np.dtype(dtype).itemsize)
    return int(min(rows, max(1, TAIL_CHUNK_BYTES // row_bytes)))


def summary_dtype(dtype: np.dtype | str) -> np.dtype:
    """The stored dtype of a quantity's summary blocks: float32 for float32/float16 values, else float64 (exact
    for int32 counts and float64 values)."""
    return np.dtype(np.float32) if np.dtype(dtype) in (np.dtype(np.float32), np.dtype(np.float16)) else np.dtype(
        np.float64
    )


def display_precision(values: np.ndarray) -> np.ndarray:
    """float32 ``values`` rounded to ``DISPLAY_BITS`` significant bits (to nearest, ties to even): relative error
    <= 2**-DISPLAY_BITS; NaN, ±Inf and a finite value that would round past float32's largest stay as they are.

    Rounding keeps order (a <= b gives round(a) <= round(b)), so a block's min <= mean <= max still holds.
    """
    values = np.asarray(values, dtype=np.float32)
    bits = values.view(np.uint32).astype(np.uint64)
    drop = 23 - (DISPLAY_BITS - 1)  # float32 keeps 23 bits after the leading one
    half = np.uint64(1 << (drop - 1))
    odd = (bits >> np.uint64(drop)) & np.uint64(1)
    rounded = ((bits + half - np.uint64(1) + odd) >> np.uint64(drop) << np.uint64(drop)).astype(np.uint32)
    out = rounded.view(np.float32)
    return np.where(np.isfinite(out), out, values)


def summarised(quantity: Quantity) -> bool:
    """Whether version 3 keeps summary blocks of ``quantity``: per-layer (``("layer",)``) and scalar (``()``) ones."""
    return quantity.axes in (("layer",), ())


def event_dtypes() -> dict[str, np.dtype]:
    """The stored dtype of each /events column (``step`` is int64 like every table)."""
    return {name: np.dtype(f"S{width}") for name, width in EVENT_COLUMNS.items()}
