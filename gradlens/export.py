"""``gradlens export``: a run's records as TensorBoard event files or as tidy CSV / Parquet tables.

TensorBoard (``export_tensorboard``), tags by kind of record:

- every logged scalar ``NAME`` → scalar tag ``NAME``;
- per-layer quantities (axes ``("layer",)``) → scalar tags ``PROBE/QUANTITY/LAYER``; ``()`` → ``PROBE/QUANTITY``;
- histograms (``[bin]`` or ``[layer, bin]`` with their ``[edge]`` quantity) → histogram tags ``PROBE/QUANTITY``
  (``/LAYER``), written with the recorded bin edges and counts (``add_histogram_raw``: bucket limits = right
  edges; min/max = edges of the outermost non-empty bins; sum and sum of squares from bin centres, as
  TensorBoard only uses them for its summary line);
- per-sample quantities (``[layer, sample]``) → histograms of the finite sample values per layer (TensorBoard
  bins them); other axes are not exported to TensorBoard (they are in the tables).

Tables (``export_tables``, CSV or Parquet): ``scalars`` (step, name, value), ``layers``, ``events`` (when the
file has them), one ``PROBE`` table per probe (step, layer, quantity, value: per-layer and scalar
quantities) and one ``PROBE.QUANTITY`` table per other quantity (step, one column per axis, value), and
``meta.json``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from gradlens.loader import Run
from gradlens.report.common import edges_for, events


def _histogram_raw(writer, tag: str, counts: np.ndarray, edges: np.ndarray, step: int) -> bool:
    counts = np.asarray(counts, dtype=np.float64)
    total = float(counts.sum())
    if total <= 0:
        return False
    nonempty = np.flatnonzero(counts > 0)
    centres = (edges[:-1] + edges[1:]) / 2
    writer.add_histogram_raw(
        tag,
        min=float(edges[nonempty[0]]),
        max=float(edges[nonempty[-1] + 1]),
        num=total,
        sum=float((counts * centres).sum()),
        sum_squares=float((counts * centres**2).sum()),
        bucket_limits=edges[1:].astype(np.float64).tolist(),
        bucket_counts=counts.tolist(),
        global_step=int(step),
    )
    return True


def export_tensorboard(run: Run, directory: str | os.PathLike) -> dict[str, int]:
    """Write ``run`` as TensorBoard event files under ``directory``; returns the number of values per kind."""
    from torch.utils.tensorboard import SummaryWriter

    written = {"scalars": 0, "histograms": 0}
    writer = SummaryWriter(log_dir=os.fspath(directory))
    try:
        writer.add_text("gradlens/meta", f"```\n{json.dumps(run.meta, indent=1)[:20000]}\n```", 0)
        for row in run.scalars().itertuples():
            writer.add_scalar(str(row.name), float(row.value), int(row.step))
            written["scalars"] += 1
        for probe in run.probes:
            quantities = run.quantities(probe)
            for name, q in quantities.items():
                if q.axes == ("edge",):
                    continue
                steps, values, axes, labels = run.array(probe, name)
                if q.axes == ():
                    for step, value in zip(steps, values, strict=True):
                        writer.add_scalar(f"{probe}/{name}", float(value), int(step))
                        written["scalars"] += 1
                elif q.axes == ("layer",):
                    layers = labels.get("layer", [str(i) for i in range(values.shape[1])])
                    for step, row in zip(steps, values, strict=True):
                        for layer, value in zip(layers, row, strict=True):
                            writer.add_scalar(f"{probe}/{name}/{layer}", float(value), int(step))
                            written["scalars"] += 1
                elif q.axes[-1] == "bin" and len(q.axes) <= 2:
                    edges_name = edges_for(quantities, name)
                    if edges_name is None:
                        continue
                    edge_steps, edges, _, _ = run.array(probe, edges_name)
                    for k, step in enumerate(steps):
                        if q.axes == ("bin",):
                            written["histograms"] += _histogram_raw(
                                writer, f"{probe}/{name}", values[k], edges[k], step
                            )
                        else:
                            layers = labels.get("layer", [str(i) for i in range(values.shape[1])])
                            for j, layer in enumerate(layers):
                                written["histograms"] += _histogram_raw(
                                    writer, f"{probe}/{name}/{layer}", values[k, j], edges[k], step
                                )
                elif len(q.axes) == 2 and q.axes[0] == "layer":
                    layers = labels.get("layer", [str(i) for i in range(values.shape[1])])
                    for k, step in enumerate(steps):
                        for j, layer in enumerate(layers):
                            finite = np.asarray(values[k, j], dtype=np.float64)
                            finite = finite[np.isfinite(finite)]
                            if finite.size:
                                writer.add_histogram(f"{probe}/{name}/{layer}", finite, int(step))
                                written["histograms"] += 1
    finally:
        writer.close()
    return written


def tables(run: Run) -> dict[str, pd.DataFrame]:
    """The tidy tables of ``run``, by table name (see the module docstring)."""
    out = {"scalars": run.scalars()}
    layers = run.layers.copy()
    for column in layers.columns:
        if layers[column].map(lambda v: isinstance(v, tuple | list | dict)).any():
            layers[column] = layers[column].map(json.dumps)
    out["layers"] = layers
    frame = events(run)
    if frame is not None:
        out["events"] = frame
    for probe in run.probes:
        quantities = run.quantities(probe)
        out[probe] = run.frame(probe)
        for name, q in quantities.items():
            if q.axes in ((), ("layer",)):
                continue
            steps, values, axes, labels = run.array(probe, name)
            grids = np.meshgrid(*[np.arange(n) for n in values.shape[1:]], indexing="ij")
            columns: dict[str, np.ndarray] = {"step": np.repeat(steps, int(np.prod(values.shape[1:])))}
            for axis, grid in zip(axes[1:], grids, strict=True):
                index = np.tile(grid.ravel(), len(steps))
                named = labels.get(axis)
                columns[axis] = np.asarray(named, dtype=object)[index] if named else index
            columns["value"] = values.reshape(-1)
            out[f"{probe}.{name}"] = pd.DataFrame(columns)
    return out


def export_tables(run: Run, directory: str | os.PathLike, fmt: str = "csv") -> list[Path]:
    """Write :func:`tables` as ``DIR/NAME.csv`` or ``DIR/NAME.parquet`` plus ``DIR/meta.json``; returns the
    paths written."""
    if fmt not in ("csv", "parquet"):
        raise ValueError(f"table format must be 'csv' or 'parquet', got {fmt!r}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, frame in tables(run).items():
        path = directory / f"{name}.{fmt}"
        if fmt == "csv":
            frame.to_csv(path, index=False)
        else:
            frame.to_parquet(path, index=False)
        paths.append(path)
    meta = directory / "meta.json"
    meta.write_text(json.dumps(run.meta, indent=1))
    return [*paths, meta]
