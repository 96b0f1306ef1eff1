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
``max``; a page asks again with ``since`` = the last step it holds and gets new points only.

JSON has no NaN or infinity: such a value is sent as the string ``"NaN"``, ``"Infinity"`` or ``"-Infinity"``
(JavaScript's ``Number()`` reads all three back).
"""

from __future__ import annotations

import time

import numpy as np

from gradlens.loader import Run, Summary
from gradlens.report.common import GRADIENT_CLASSES, NO_GRADIENT, describe, probes_of_class, run_label

SCHEMA = "gradlens.watch/1"  # the JSON layout of /data and of the page's embedded data
SCALAR_POINTS = 1000  # blocks per scalar curve (the summary returns between this and 4× as many)
LAYER_POINTS = 250  # columns of the per-layer heat strip (× the number of layers values)
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


def blocks_json(summary: Summary) -> dict:
    """A summary's blocks: ``first``, ``last`` (steps), ``count``, ``mean``, ``min``, ``max`` (``[B]`` or
    ``[B, L]``)."""
    return {
        "block": int(summary.block),
        "first": summary.first_step.astype(np.int64).tolist(),
        "last": summary.last_step.astype(np.int64).tolist(),
        "count": summary.count.astype(np.int64).tolist(),
        "mean": numbers(summary.mean),
        "min": numbers(summary.min),
        "max": numbers(summary.max),
    }


def global_norm(norms: np.ndarray, nonfinite: np.ndarray) -> np.ndarray:
    """√(Σ_ℓ ‖g_ℓ‖²) per record ``[N]`` from per-layer norms ``[N, L]``; layers with ``nonfinite == -1`` (no
    gradient) add 0, any other NaN or infinite norm makes the result NaN or infinite."""
    squares = np.where(nonfinite == NO_GRADIENT, 0.0, np.asarray(norms, dtype=np.float64) ** 2)
    return np.sqrt(squares.sum(axis=1))


def _start(since: int | None) -> int | None:
    return None if since is None else int(since) + 1


def gradient_series(run: Run, since: int | None) -> tuple[dict | None, dict | None]:
    """The per-layer norm blocks and the global norm of the first GradStats probe (None, None without one)."""
    probes = [p for p in probes_of_class(run, GRADIENT_CLASSES) if LAYER_QUANTITY in run.quantities(p)]
    if not probes:
        return None, None
    probe = probes[0]
    start = _start(since)
    norms = run.summary(probe, LAYER_QUANTITY, points=LAYER_POINTS, start=start)
    layers = blocks_json(norms)
    layers["probe"] = probe
    layers["names"] = list(run.array(probe, LAYER_QUANTITY, stop=-1)[3]["layer"])  # labels only: no record read
    # the global norm at full resolution while it fits SCALAR_POINTS blocks, else at each block's last record
    flat = run.summary(probe, LAYER_QUANTITY, points=SCALAR_POINTS, start=start)
    if "nonfinite" in run.quantities(probe):
        missing = run.summary(probe, "nonfinite", points=SCALAR_POINTS, start=start).last
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
    """The points of ``run`` after step ``since`` (all when None) and the run's state, JSON-ready.

    Keys: ``schema``, ``path``, ``label``, ``describe`` (model, dataset, seed... from the stored config),
    ``status``, ``last_flush`` (unix seconds or None), ``now``, ``since``, ``step`` (the last step seen: the
    largest of ``since`` and every returned point's last step; None before any record), ``scalars`` (name ->
    blocks, see :func:`blocks_json`), ``layers`` (the per-layer ``norm`` blocks with ``probe`` and ``names``,
    or None), ``global_norm`` (blocks of one record each, or None).
    """
    status, last_flush = run.status, run.last_flush  # read first: every record read after is at least this new
    start = _start(since)
    scalars = {name: blocks_json(run.scalar_summary(name, points=SCALAR_POINTS, start=start))
               for name in run.scalar_names()}
    layers, total = gradient_series(run, since)
    ends = [since] if since is not None else []
    ends += [series["last"][-1] for series in (*scalars.values(), layers, total) if series and series["last"]]
    return {
        "schema": SCHEMA,
        "path": run.path,
        "label": run_label(run),
        "describe": describe(run),
        "status": status,
        "last_flush": last_flush,
        "now": time.time() if now is None else now,
        "since": since,
        "step": max(ends) if ends else None,
        "scalars": scalars,
        "layers": layers,
        "global_norm": total,
    }
