"""The on-disk format of a gradlens run: the one module that defines it (documented in ``docs/schema.md``).

The recorder (writer), the loader (reader) and the probes (which declare :class:`Quantity`) all import this
module; it imports only the standard library and numpy, and none of them, so the format has one definition
and no import cycle.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

FORMAT = "gradlens"  # root attribute ``format``: how the loader recognises its files
# 2 adds the required /events table; files of version 1 (no /events) stay readable.
SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)
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
STEP = "step"  # every table: the optimizer step of each row
N_ROWS = "n_rows"  # every table: committed rows; readers stop there
RESERVED_DATASETS = frozenset({STEP, N_ROWS})
LAYER_FIELDS = ("name", "kind", "shape", "params")

# Table columns: name -> fixed-length byte-string width (UTF-8, longer values are cut at a character).
NAME_BYTES = 64  # /scalars/name
EVENT_COLUMNS = {"kind": 32, "source": 256, "message": 1024}
# Event kinds the library writes (others may be added; a kind is any short identifier).
EVENT_KINDS = ("probe_error", "probe_disabled", "step_skipped", "warning")

REQUIRED = {
    1: (RUN_STATUS, RUN_LAST_FLUSH, PROBES, "scalars/step", "scalars/name", "scalars/value"),
    2: (
        RUN_STATUS,
        RUN_LAST_FLUSH,
        PROBES,
        "scalars/step",
        "scalars/name",
        "scalars/value",
        "events/step",
        "events/kind",
        "events/source",
        "events/message",
    ),
}

# Rows per chunk aim at this many bytes; every row dataset carries a Fletcher-32 checksum per chunk, so a
# damaged chunk is an error on reading, never a silently wrong number.
CHUNK_BYTES = 64 * 1024
# Metadata reads of a file opened for SWMR reading are retried while a checksum fails (the writer may be
# rewriting that entry), with a back-off that doubles from 1 ns. HDF5's default of 100 attempts turns a
# truncated or damaged file into a sleep of days; 26 attempts wait at most 2**26 ns ~ 67 ms in total.
SWMR_READ_ATTEMPTS = 26


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


def event_dtypes() -> dict[str, np.dtype]:
    """The stored dtype of each /events column (``step`` is int64 like every table)."""
    return {name: np.dtype(f"S{width}") for name, width in EVENT_COLUMNS.items()}
