"""Create the groups and datasets of a version 3 run file, and check what a writer declares before that.

The layout is defined in :mod:`gradlens.schema` and documented in ``docs/schema.md``: root attributes, ``/run``,
``/layers``, one table per probe (with its summary block tables), ``/scalars`` (with ``names`` and its summary)
and ``/events``. Every table is made by :func:`gradlens.recorder.tables.create_table`. SWMR writers cannot
create objects, so everything a run will write is created here, before the file switches to SWMR mode.
"""

from __future__ import annotations

import json

import h5py
import numpy as np

from gradlens.recorder.tables import create_table
from gradlens.schema import (
    BY_NAME,
    EVENTS,
    FORMAT,
    LAST_STEP,
    LAYER_FIELDS,
    NAME_BYTES,
    RESERVED_DATASETS,
    SCALAR_SLOTS,
    SCHEMA_VERSION,
    STATUS_DTYPE,
    STATUS_RUNNING,
    STORED_BLOCKS,
    SUMMARY,
    SUMMARY_ROWS,
    SUMMARY_STATS,
    Quantity,
    event_dtypes,
    summarised,
    summary_dtype,
)

NAME_DTYPE = np.dtype(f"S{NAME_BYTES}")
SCALAR_SUMMARY = {"name": ((), (), NAME_DTYPE), "value": ((len(SUMMARY_STATS),), ("stat",), np.dtype(np.float64))}


def check_name(kind: str, name: object) -> str:
    """``name`` if it can name an HDF5 object (non-empty, no '/', not '.' or '..'), else a ValueError."""
    if not isinstance(name, str) or not name or "/" in name or name in (".", ".."):
        raise ValueError(
            f"{kind} name {name!r} cannot name an HDF5 object; use a non-empty string without '/'"
        )
    return name


def normalise_quantity(probe: str, name: str, quantity: Quantity) -> Quantity:
    """The declared quantity with int shape, str axes and labels and a dtype name; a ValueError naming the fix."""
    check_name(f"probe {probe!r} quantity", name)
    if name in RESERVED_DATASETS:
        raise ValueError(
            f"probe {probe!r} declares a quantity named {name!r}, which the file layout reserves "
            f"({sorted(RESERVED_DATASETS)}); rename it"
        )
    if not isinstance(quantity, Quantity):
        raise ValueError(
            f"probe {probe!r} quantity {name!r} is a {type(quantity).__name__}, expected a Quantity"
        )
    shape = tuple(int(d) for d in quantity.shape)
    if any(d < 1 for d in shape):
        raise ValueError(
            f"probe {probe!r} quantity {name!r} has shape {shape} with an empty axis; "
            "a quantity must hold at least one value per record"
        )
    try:
        dtype = np.dtype(quantity.dtype)
    except TypeError as error:
        raise ValueError(f"probe {probe!r} quantity {name!r} has dtype {quantity.dtype!r}: {error}") from None
    if dtype.kind not in "biuf":
        raise ValueError(
            f"probe {probe!r} quantity {name!r} has dtype {dtype.name}; use a numeric dtype such as 'float64'"
        )
    labels = {str(axis): [str(label) for label in values] for axis, values in quantity.labels.items()}
    for axis, values in labels.items():
        if axis not in quantity.axes:
            raise ValueError(
                f"probe {probe!r} quantity {name!r} labels axis {axis!r}, not one of {quantity.axes}"
            )
        length = shape[quantity.axes.index(axis)]
        if len(values) != length:
            raise ValueError(
                f"probe {probe!r} quantity {name!r} has {len(values)} labels for axis {axis!r} "
                f"of length {length}"
            )
    return Quantity(shape=shape, axes=tuple(str(a) for a in quantity.axes), labels=labels, dtype=dtype.name)


def layer_table(layers: list[dict]) -> np.ndarray:
    """The layer rows as a structured array; fields beyond name/kind/shape/params are kept, JSON-encoded."""
    extra: list[str] = []
    for i, row in enumerate(layers):
        missing = [key for key in LAYER_FIELDS if key not in row]
        if missing:
            raise ValueError(f"layer row {i} ({row!r}) lacks {missing}; every row needs {list(LAYER_FIELDS)}")
        extra += [key for key in row if key not in LAYER_FIELDS and key not in extra]
    names = [str(row["name"]) for row in layers]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"layer names must be unique, got duplicates {duplicates}")
    columns: dict[str, np.ndarray] = {
        "name": np.array([name.encode() for name in names]),
        "kind": np.array([str(row["kind"]).encode() for row in layers]),
        "shape": np.array([json.dumps([int(d) for d in row["shape"]]).encode() for row in layers]),
        "params": np.array([int(row["params"]) for row in layers], dtype=np.int64),
    }
    for key in extra:
        columns[key] = np.array([json.dumps(row.get(key)).encode() for row in layers])
    table = np.empty(
        len(layers), dtype=[(key, column.dtype if len(column) else "S1") for key, column in columns.items()]
    )
    for key, column in columns.items():
        table[key] = column
    return table


def create_blocks(group: h5py.Group, columns: dict, compact: bool = False, records: int | None = None) -> None:
    """A ``summary`` group in ``group`` with one block table per stored block size (``schema.STORED_BLOCKS``;
    those of at most ``records`` records when the length of the run is known), listed in its ``blocks``
    attribute."""
    summary = group.create_group(SUMMARY)
    blocks = [block for block in STORED_BLOCKS if records is None or block <= records]
    summary.attrs["blocks"] = blocks
    summary.attrs["stats"] = list(SUMMARY_STATS)
    for block in blocks:
        create_table(
            summary.create_group(str(block)),
            {LAST_STEP: ((), (), np.dtype(np.int64)), **columns},
            tail=False,
            rows=SUMMARY_ROWS,
            compact=compact,
        )


def init_file(file: h5py.File, meta: dict, compact: bool = False, scalar_records: int | None = None) -> None:
    """Root attributes, ``/run``, an empty ``/probes``, and the ``/scalars`` and ``/events`` tables (``compact``,
    with at most ``scalar_records`` records per scalar: see :func:`create_table` and :func:`create_blocks`)."""
    file.attrs["format"] = FORMAT
    file.attrs["schema_version"] = SCHEMA_VERSION
    file.attrs["meta"] = json.dumps(meta, separators=(",", ":"))  # attributes are not compressed: no blanks
    run = file.create_group("run")
    run.create_dataset("status", data=np.bytes_(STATUS_RUNNING.encode()), dtype=STATUS_DTYPE)
    run.create_dataset("last_flush", data=np.float64(np.nan))
    file.create_group("probes", track_order=True)
    scalars = file.create_group("scalars")
    create_table(scalars, {"name": ((), (), NAME_DTYPE), "value": ((), (), np.dtype(np.float64))}, compact=compact)
    create_table(scalars.create_group("names"), {"name": ((), (), NAME_DTYPE)}, compact=compact)
    create_blocks(scalars, SCALAR_SUMMARY, compact, scalar_records)
    file.create_group(BY_NAME)
    for slot in range(0 if compact else SCALAR_SLOTS):  # a compact file (no SWMR) adds one per name it logs
        create_slot(file, slot)
    events = {name: ((), (), dtype) for name, dtype in event_dtypes().items()}
    create_table(file.create_group(EVENTS), events, compact=compact)


def create_slot(file: h5py.File, slot: int, compact: bool = False) -> None:
    """The table ``/scalars/by_name/<slot>`` of the ``slot``-th logged scalar name: ``step`` and ``value``."""
    create_table(file[BY_NAME].create_group(str(slot)), {"value": ((), (), np.dtype(np.float64))}, compact=compact)


def create_probe(
    file: h5py.File, probe: str, quantities: dict[str, Quantity], compact: bool = False, records: int | None = None
) -> None:
    """The table of one probe (a column per quantity, with axes and labels) and its summary block tables
    (``compact``, ``records``: see :func:`create_table` and :func:`create_blocks`)."""
    group = file["probes"].create_group(probe)
    group.attrs["quantities"] = list(quantities)
    create_table(group, {name: (q.shape, q.axes, np.dtype(q.dtype)) for name, q in quantities.items()}, compact=compact)
    for name, q in quantities.items():
        group[name].attrs["axes"] = ["step", *q.axes]
        for axis, labels in q.labels.items():
            group[name].attrs[f"labels_{axis}"] = labels
    blocks = {
        name: ((*q.shape, len(SUMMARY_STATS)), (*q.axes, "stat"), summary_dtype(q.dtype))
        for name, q in quantities.items()
        if summarised(q)
    }
    if blocks:
        create_blocks(group, blocks, compact, records)
