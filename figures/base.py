"""What every figure module shares: its inputs (recorded files), its output, captions, saving.

A figure module ``figures/<id>.py`` defines

- ``ID``: the catalogue ID (``"yt-fig13"``);
- ``ANALYSES``: the analyses whose runs it reads (``("phi_curve",)``);
- ``NEEDS``: analysis -> the recorded keys it reads: ``"probe/quantity"`` or ``"scalars/name"`` for training
  runs, array names for computed results; checked before drawing;
- ``CLAIM``: what the document claims the item shows (printed next to the figure in the gallery);
- ``draw(inputs: FigureInputs, out_dir: Path) -> FigureOutput``.

A figure reads HDF5 only: it never trains and never builds a model.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import h5py  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from gradlens.loader import Run, load  # noqa: E402
from gradlens.results import Result, load_result  # noqa: E402

Recorded = Run | Result


def open_recorded(path: str | os.PathLike) -> Recorded:
    """A training run (``gradlens.load``) or a computed result (``load_result``), by the file's format."""
    with h5py.File(path, "r", locking=False) as file:
        kind = file.attrs.get("format")
    return load_result(path) if kind == "gradlens-result" else load(path)


def config(recorded: Recorded) -> dict:
    """The configuration stored with a run or result."""
    return recorded.meta.get("config", recorded.meta)


def scalar_values(run: Run, name: str) -> np.ndarray:
    """Every logged value of scalar ``name`` of a training run, in logging order; KeyError when there is none."""
    frame = run.scalars()
    values = frame.loc[frame["name"] == name, "value"].to_numpy()
    if values.size == 0:
        raise KeyError(f"{run.path} logged no scalar {name!r}")
    return values


def final_scalar(run: Run, name: str) -> float:
    """The last logged value of scalar ``name`` (e.g. the test accuracy after the last epoch)."""
    return float(scalar_values(run, name)[-1])


def missing_keys(recorded: Recorded, keys: Iterable[str]) -> list[str]:
    """The ``keys`` that ``recorded`` does not hold."""
    if isinstance(recorded, Result):
        return [key for key in keys if key not in recorded.arrays]
    names = set(recorded.scalars()["name"].unique()) if any(k.startswith("scalars/") for k in keys) else set()
    missing = []
    for key in keys:
        group, _, name = key.partition("/")
        if group == "scalars":
            if name not in names:
                missing.append(key)
        elif group not in recorded.probes or name not in recorded.quantities(group):
            missing.append(key)
    return missing


@dataclass
class FigureInputs:
    """The recorded files a figure reads, by analysis, and the scale they were made at."""

    scale: str
    runs: dict[str, list[Recorded]]

    def of(self, analysis: str, **match: object) -> list[Recorded]:
        """Runs of ``analysis`` whose configuration has every ``key == value`` of ``match``."""
        return [r for r in self.runs[analysis] if all(config(r).get(k) == v for k, v in match.items())]

    def one(self, analysis: str, **match: object) -> Recorded:
        """The single run of ``analysis`` matching ``match``; an error naming the match otherwise."""
        found = self.of(analysis, **match)
        if len(found) != 1:
            raise ValueError(f"expected one {analysis} run with {match}, found {len(found)}")
        return found[0]


@dataclass
class FigureOutput:
    """What ``draw`` made.

    Attributes:
        files: written files (PNG and PDF, or Markdown and CSV for tables).
        caption: states dataset, scale, seeds, epochs and any substitution versus the document.
        numbers: the key numbers, for ``summary.md`` (name -> value).
        figure: the matplotlib figure (still open, so tests can read what was plotted), or None.
        table: the table as a DataFrame, or None.
    """

    files: list[Path]
    caption: str
    numbers: dict[str, object] = field(default_factory=dict)
    figure: plt.Figure | None = None
    table: pd.DataFrame | None = None


def describe(recorded: Sequence[Recorded], scale: str) -> str:
    """'Data: …; scale: …; seeds: …; epochs: …' from the stored configurations (what was actually used)."""
    configs = [config(r) for r in recorded]

    def values(key: str) -> str:
        found = sorted({str(c[key]) for c in configs if key in c}, key=lambda v: (len(v), v))
        return ", ".join(found) if found else "—"

    def source(c: dict) -> str:
        """The data source, with any resampling of the images (which changes what the nets see)."""
        pooled = [step for step in c.get("preprocessing", "").split("; ") if "average-pooled" in step]
        name = c.get("data_source") or c.get("dataset", "")
        return f"{name} ({pooled[0]})" if name and pooled else name

    sources = sorted({source(c) for c in configs} - {""})
    parts = [f"scale: {scale}", f"seeds: {values('seed')}"]
    epochs = values("epochs")
    if epochs != "—":
        parts.append(f"epochs: {epochs}")
    if sources:
        parts.insert(0, "data: " + "; ".join(sources))
    return "; ".join(parts) + "."


def save_figure(fig: plt.Figure, out_dir: Path, item_id: str) -> list[Path]:
    """Write ``<id>.png`` and ``<id>.pdf`` into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = [out_dir / f"{item_id}.png", out_dir / f"{item_id}.pdf"]
    for path in files:
        fig.savefig(path, dpi=130 if path.suffix == ".png" else None, bbox_inches="tight")
    return files


def save_table(table: pd.DataFrame, out_dir: Path, item_id: str) -> list[Path]:
    """Write ``<id>.md`` (Markdown) and ``<id>.csv`` into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    markdown, csv = out_dir / f"{item_id}.md", out_dir / f"{item_id}.csv"
    markdown.write_text(_markdown(table), encoding="utf-8")
    table.to_csv(csv, index=False)
    return [markdown, csv]


def _markdown(table: pd.DataFrame) -> str:
    header = "| " + " | ".join(str(c) for c in table.columns) + " |"
    rule = "|" + "|".join("---" for _ in table.columns) + "|"
    rows = ["| " + " | ".join(_cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join([header, rule, *rows]) + "\n"


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
