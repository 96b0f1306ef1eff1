"""``gradlens export --csv / --parquet``: a run's records as tidy tables, written slab by slab (bounded memory).

Tables: ``scalars`` (step, name, value), ``layers``, ``events`` (when the file has them), one ``PROBE`` table per
probe (step, layer, quantity, value: its per-layer and scalar quantities, ordered by quantity, step, layer) and
one ``PROBE.QUANTITY`` table per other quantity (step, one column per axis, value), and ``meta.json``. Probe
tables are read ``SLAB_VALUES`` values at a time (:func:`gradlens.export.tensorboard.slabs`) and appended: CSV
chunk by chunk, Parquet as one row group per slab (``pyarrow.parquet.ParquetWriter``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from gradlens.export.tensorboard import slabs
from gradlens.loader import Run
from gradlens.report.common import events


def _layers(run: Run) -> pd.DataFrame:
    layers = run.layers.copy()
    for column in layers.columns:
        if layers[column].map(lambda v: isinstance(v, tuple | list | dict)).any():
            layers[column] = layers[column].map(json.dumps)
    return layers


def _tidy(run: Run, probe: str) -> Iterator[pd.DataFrame]:
    """The ``PROBE`` table in slabs: per quantity (declaration order), its records in step order."""
    for name, q in run.quantities(probe).items():
        if q.axes not in ((), ("layer",)):
            continue
        width = q.shape[0] if q.axes else 1
        for start, stop in slabs(run, probe, width):
            steps, values, _, labels = run.array(probe, name, start, stop)
            names = np.asarray(labels.get("layer", [""]), dtype=object)
            yield pd.DataFrame(
                {
                    "step": np.repeat(steps, len(names)),
                    "layer": np.tile(names, len(steps)),
                    "quantity": name,
                    "value": values.reshape(len(steps), len(names)).ravel().astype(np.float64),
                }
            )


def _long(run: Run, probe: str, name: str) -> Iterator[pd.DataFrame]:
    """The ``PROBE.QUANTITY`` table of a quantity of any axes, in slabs: step, one column per axis, value."""
    q = run.quantities(probe)[name]
    for start, stop in slabs(run, probe, int(np.prod(q.shape))):
        steps, values, axes, labels = run.array(probe, name, start, stop)
        grids = np.meshgrid(*[np.arange(n) for n in values.shape[1:]], indexing="ij")
        columns: dict[str, np.ndarray] = {"step": np.repeat(steps, int(np.prod(values.shape[1:])))}
        for axis, grid in zip(axes[1:], grids, strict=True):
            index = np.tile(grid.ravel(), len(steps))
            named = labels.get(axis)
            columns[axis] = np.asarray(named, dtype=object)[index] if named else index
        columns["value"] = values.reshape(-1)
        yield pd.DataFrame(columns)


def table_slabs(run: Run) -> Iterator[tuple[str, Iterator[pd.DataFrame]]]:
    """``(table name, its slabs)`` for every table of :func:`tables`, in order."""
    yield "scalars", iter([run.scalars()])
    yield "layers", iter([_layers(run)])
    frame = events(run)
    if frame is not None:
        yield "events", iter([frame])
    for probe in run.probes:
        yield probe, _tidy(run, probe)
        for name, q in run.quantities(probe).items():
            if q.axes not in ((), ("layer",)):
                yield f"{probe}.{name}", _long(run, probe, name)


def tables(run: Run) -> dict[str, pd.DataFrame]:
    """The tidy tables of ``run`` in memory, by table name (see the module docstring)."""
    out = {}
    for name, parts in table_slabs(run):
        parts = list(parts)
        out[name] = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0] if parts else pd.DataFrame()
    return out


def export_tables(run: Run, directory: str | os.PathLike, fmt: str = "csv") -> list[Path]:
    """Write :func:`tables` as ``DIR/NAME.csv`` or ``DIR/NAME.parquet`` plus ``DIR/meta.json``, slab by slab;
    returns the paths written."""
    if fmt not in ("csv", "parquet"):
        raise ValueError(f"table format must be 'csv' or 'parquet', got {fmt!r}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, parts in table_slabs(run):
        path = directory / f"{name}.{fmt}"
        if fmt == "csv":
            _write_csv(path, parts)
        else:
            _write_parquet(path, parts)
        paths.append(path)
    meta = directory / "meta.json"
    meta.write_text(json.dumps(run.meta, indent=1))
    return [*paths, meta]


def _write_csv(path: Path, parts: Iterator[pd.DataFrame]) -> None:
    with open(path, "w", newline="") as handle:
        for k, part in enumerate(parts):
            part.to_csv(handle, index=False, header=k == 0)


def _write_parquet(path: Path, parts: Iterator[pd.DataFrame]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    writer = None
    try:
        for part in parts:
            table = pa.Table.from_pandas(part, preserve_index=False)
            if writer is None:
                writer = pq.ParquetWriter(path, table.schema)
            writer.write_table(table.cast(writer.schema))
        if writer is None:  # no slab at all: an empty table with no columns
            pq.write_table(pa.table({}), path)
    finally:
        if writer is not None:
            writer.close()
