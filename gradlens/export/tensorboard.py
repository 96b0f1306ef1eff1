"""``gradlens export --tensorboard``: a run's records as TensorBoard event files.

Tags by kind of record:

- every logged scalar ``NAME`` → scalar tag ``NAME``;
- per-layer quantities (axes ``("layer",)``) → scalar tags ``PROBE/QUANTITY/LAYER``; ``()`` → ``PROBE/QUANTITY``;
- histograms (``[bin]`` or ``[layer, bin]`` with their ``[edge]`` quantity) → histogram tags ``PROBE/QUANTITY``
  (``/LAYER``), written with the recorded bin edges and counts (``add_histogram_raw``: bucket limits = right
  edges; min/max = edges of the outermost non-empty bins; sum and sum of squares from bin centres, as
  TensorBoard only uses them for its summary line);
- per-sample quantities (``[layer, sample]``) → histograms of the finite sample values per layer (TensorBoard
  bins them); other axes are not exported to TensorBoard (they are in the tables).

Scalars are written by :mod:`gradlens.export.events`: one Event per step of a probe holding every scalar of
that step, made for many steps at once (about 2 M values per second on one core), read in slabs of
``SLAB_VALUES`` values (memory bounded). Histograms and the metadata text go through TensorBoard's own writer
(``torch.utils.tensorboard``) into a second event file of the same directory. Scalars are float32 in
TensorBoard (``simple_value``).
"""

from __future__ import annotations

import json
import os

import numpy as np

from gradlens.export.events import EventFile, ScalarLayout
from gradlens.loader import Run
from gradlens.report.common import edges_for

SLAB_VALUES = 250_000  # values of one probe read and encoded at a time


def slabs(run: Run, probe: str, width: int) -> list[tuple[int | None, int | None]]:
    """``(start, stop)`` step ranges of ``probe`` holding about ``SLAB_VALUES / width`` records each."""
    rows = max(1, SLAB_VALUES // max(1, width))
    bounds = run.steps(probe, stride=rows).tolist()
    return [(bound, following) for bound, following in zip(bounds, [*bounds[1:], None], strict=True)]


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


def _scalars(run: Run, events: EventFile) -> int:
    """Every logged scalar and every per-layer / scalar quantity as scalar events; returns the value count."""
    written = 0
    for name in run.scalar_names():
        steps, values = run.scalar(name)
        events.write(ScalarLayout([name], events.wall_time).encode(steps, values[:, None]))
        written += len(steps)
    for probe in run.probes:
        quantities = {n: q for n, q in run.quantities(probe).items() if q.axes in ((), ("layer",))}
        if not quantities:
            continue
        tags = []
        for name, q in quantities.items():
            labels = run.array(probe, name, stop=-1)[3].get("layer") if q.axes else None  # labels, no rows
            tags += [f"{probe}/{name}/{layer}" for layer in labels] if q.axes else [f"{probe}/{name}"]
        layout = ScalarLayout(tags, events.wall_time)
        for start, stop in slabs(run, probe, len(tags)):
            parts = [run.array(probe, name, start, stop) for name in quantities]
            steps = parts[0][0]
            values = np.concatenate([part[1].reshape(len(steps), -1) for part in parts], axis=1)
            events.write(layout.encode(steps, values))
            written += values.size
    return written


def _histograms(run: Run, writer) -> int:
    """Recorded histograms and per-sample quantities through TensorBoard's writer; returns the count."""
    written = 0
    for probe in run.probes:
        quantities = run.quantities(probe)
        for name, q in quantities.items():
            if q.axes in ((), ("layer",), ("edge",)):
                continue
            if q.axes[-1] == "bin" and len(q.axes) <= 2:
                edges_name = edges_for(quantities, name)
                if edges_name is None:
                    continue
                steps, values, _, labels = run.array(probe, name)
                edges = run.array(probe, edges_name)[1]
                for k, step in enumerate(steps):
                    if q.axes == ("bin",):
                        written += _histogram_raw(writer, f"{probe}/{name}", values[k], edges[k], step)
                        continue
                    for j, layer in enumerate(labels.get("layer", [str(i) for i in range(values.shape[1])])):
                        written += _histogram_raw(writer, f"{probe}/{name}/{layer}", values[k, j], edges[k], step)
            elif len(q.axes) == 2 and q.axes[0] == "layer":
                steps, values, _, labels = run.array(probe, name)
                layers = labels.get("layer", [str(i) for i in range(values.shape[1])])
                for k, step in enumerate(steps):
                    for j, layer in enumerate(layers):
                        finite = np.asarray(values[k, j], dtype=np.float64)
                        finite = finite[np.isfinite(finite)]
                        if finite.size:
                            writer.add_histogram(f"{probe}/{name}/{layer}", finite, int(step))
                            written += 1
    return written


def export_tensorboard(run: Run, directory: str | os.PathLike) -> dict[str, int]:
    """Write ``run`` as TensorBoard event files under ``directory``; returns the number of values per kind."""
    from torch.utils.tensorboard import SummaryWriter

    events = EventFile(directory)
    try:
        scalars = _scalars(run, events)
    finally:
        events.close()
    writer = SummaryWriter(log_dir=os.fspath(directory))
    try:
        writer.add_text("gradlens/meta", f"```\n{json.dumps(run.meta, indent=1)[:20000]}\n```", 0)
        histograms = _histograms(run, writer)
    finally:
        writer.close()
    return {"scalars": scalars, "histograms": histograms}
