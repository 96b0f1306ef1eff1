"""What a watch page draws, read from a run's summaries: the points after a step, as JSON-ready lists.

:func:`snapshot` reads, for the records with ``step > since`` (all of them when ``since`` is None):

- every logged scalar: :meth:`gradlens.loader.Run.scalar_summary` with ``SCALAR_POINTS`` points;
- of the first ``GradStats`` probe (per-parameter gradient statistics): the ``norm`` ‖g_ℓ‖₂ of every layer
  (parameter) ℓ as :meth:`gradlens.loader.Run.summary` blocks with ``LAYER_POINTS`` points (a heat strip),
  and the global gradient norm √(Σ_ℓ ‖g_ℓ‖²) of the record that ends each block (layers without a gradient,
  ``nonfinite = -1``, add 0; a NaN or infinite norm makes the global norm NaN or infinite).

Every read goes through :func:`gradlens.loader.load`'s SWMR-safe path (committed rows only) and costs the
blocks returned, whatever the run's length: a summary reads stored blocks of 2^k records. Each point carries
``first`` and ``last`` (the steps of the first and last record of its block), ``count``, ``mean``, ``min`` and
``max``; a page asks again with ``since`` = one before the newest step it holds and keeps new points only.

JSON has no NaN or infinity: such a value is sent as the string ``"NaN"``, ``"Infinity"`` or ``"-Infinity"``
(JavaScript's ``Number()`` reads all three back).
"""

from __future__ import annotations

import time

import numpy as np

from gradlens.loader import Run, Summary
from gradlens.report.common import GRADIENT_CLASSES, NO_GRADIENT, describe, probes_of_class, run_label

SCHEMA = "gradlens.watch/1"  # the JSON layout of /data and of the page's embedded data
SCALAR_POINTS = 300  # blocks per curve: between this and 4× as many (every record below 32× as many records)
LAYER_POINTS = 100  # columns of the per-layer heat strip, as above (× the number of layers values)
LAYER_QUANTITY = "norm"


def numbers(values: np.ndarray) -> list:
    """``values`` (``[B]`` or ``[B, L]``) as a JSON list: finite numbers as floats, non-finite ones as the strings
    ``"NaN"``, ``"Infinity"``, ``"-Infinity"``."""
    array = np.asarray(values, dtype=np.float64)
    out = array.tolist()
    if np.isfinite(array).all():
        return out
    flat = array.ravel()
    bad = np.flatnonzero(~np.isfinite(flat))

    def text(value: float) -> str:
        return "NaN" if np.isnan(value) else ("Infinity" if value > 0 else "-Infinity")

    if array.ndim > 2:
        raise ValueError(f"numbers() takes [B] or [B, L] arrays, got shape {array.shape}")
    if array.ndim == 1:
        for i in bad:
            out[i] = text(flat[i])
    else:
        for i in bad:
            row, column = divmod(int(i), array.shape[1])
            out[row][column] = text(flat[i])
    return out


def blocks_json(summary: Summary, bands: bool = True) -> dict:
    """A summary's blocks: ``first``, ``last`` (steps), ``count``, ``mean`` and, with ``bands``, ``min`` and
    ``max`` (``[B]`` or ``[B, L]``; a page takes a missing min or max as the mean)."""
    out = {
        "block": int(summary.block),
        "first": summary.first_step.astype(np.int64).tolist(),
        "last": summary.last_step.astype(np.int64).tolist(),
        "count": summary.count.astype(np.int64).tolist(),
        "mean": numbers(summary.mean),
    }
    if bands:
        out.update(min=numbers(summary.min), max=numbers(summary.max))
    return out


def global_norm(norms: np.ndarray, nonfinite: np.ndarray) -> np.ndarray:
    """√(Σ_ℓ ‖g_ℓ‖²) per record ``[N]`` from per-layer norms ``[N, L]``; layers with ``nonfinite == -1`` (no
    gradient) add 0, any other NaN or infinite norm makes the result NaN or infinite."""
    squares = np.where(nonfinite == NO_GRADIENT, 0.0, np.asarray(norms, dtype=np.float64) ** 2)
    return np.sqrt(squares.sum(axis=1))


def _start(since: int | None) -> int | None:
    return None if since is None else int(since) + 1


def newest_step(run: Run, start: int | None) -> int | None:
    """The largest step with a committed record (probe record or scalar) at or after ``start``; None if none.

    The recorder writes records in step order (everything of step s before anything of step s + 1), so once a
    record of step S is committed, every record of the steps before S is too: reads that stop before S agree
    whenever they are made, and only step S itself may still be partial.
    """
    ends = [span[1] for span in map(run.span, run.probes) if span and (start is None or span[1] >= start)]
    for name in run.scalar_names():
        last = run.scalar_summary(name, points=1, start=start).last_step
        ends += [int(last[-1])] if len(last) else []
    return max(ends, default=None)


def gradient_series(run: Run, start: int | None, stop: int | None) -> tuple[dict | None, dict | None]:
    """The per-layer norm blocks and the global norm of the first GradStats probe over ``start <= step < stop``
    (None, None without such a probe)."""
    probes = [p for p in probes_of_class(run, GRADIENT_CLASSES) if LAYER_QUANTITY in run.quantities(p)]
    if not probes:
        return None, None
    probe = probes[0]
    norms = run.summary(probe, LAYER_QUANTITY, points=LAYER_POINTS, start=start, stop=stop)
    layers = blocks_json(norms, bands=False)  # the heat strip colours the means
    layers["probe"] = probe
    layers["names"] = list(run.array(probe, LAYER_QUANTITY, stop=-1)[3]["layer"])  # labels only: no record read
    # the global norm at full resolution while it fits SCALAR_POINTS blocks, else at each block's last record
    flat = run.summary(probe, LAYER_QUANTITY, points=SCALAR_POINTS, start=start, stop=stop)
    if "nonfinite" in run.quantities(probe):
        missing = run.summary(probe, "nonfinite", points=SCALAR_POINTS, start=start, stop=stop).last
    else:
        missing = np.zeros_like(flat.last)
    value = global_norm(flat.last, missing)
    total = {
        "probe": probe,
        "block": int(flat.block),
        "first": flat.last_step.astype(np.int64).tolist(),
        "last": flat.last_step.astype(np.int64).tolist(),
        "count": np.ones(len(value), np.int64).tolist(),
        "mean": numbers(value),
        "min": numbers(value),
        "max": numbers(value),
    }
    return layers, total


def snapshot(run: Run, since: int | None = None, now: float | None = None) -> dict:
    """The points of ``run`` after step ``since`` (all when None) up to its newest step S, and its state.

    Every series is read up to the same step S (:func:`newest_step`, found first), so the series agree; the
    records of S itself may be partial while the run is written: a page asks again with ``since = S - 1`` and
    keeps, per series, only points after those it holds.

    Keys: ``schema``, ``path``, ``label``, ``describe`` (model, dataset, seed... from the stored config),
    ``status``, ``last_flush`` (unix seconds or None), ``now``, ``since``, ``step`` (S, or ``since`` when
    nothing is newer; None before any record), ``scalars`` (name -> blocks, see :func:`blocks_json`),
    ``layers`` (the per-layer ``norm`` blocks with ``probe`` and ``names``, or None), ``global_norm`` (blocks
    of one record each, or None).
    """
    status, last_flush = run.status, run.last_flush  # read first: every record read after is at least this new
    start = _start(since)
    newest = newest_step(run, start)
    stop = (start if start is not None else 0) if newest is None else newest + 1
    scalars = {name: blocks_json(run.scalar_summary(name, points=SCALAR_POINTS, start=start, stop=stop))
               for name in run.scalar_names()}
    layers, total = gradient_series(run, start, stop)
    return {
        "schema": SCHEMA,
        "path": run.path,
        "label": run_label(run),
        "describe": describe(run),
        "status": status,
        "last_flush": last_flush,
        "now": time.time() if now is None else now,
        "since": since,
        "step": since if newest is None else newest,
        "scalars": scalars,
        "layers": layers,
        "global_norm": total,
    }
