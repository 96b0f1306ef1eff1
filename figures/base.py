"""What every figure module shares: its inputs (recorded files), its output, captions, saving.

A figure module ``figures/<id>.py`` defines

- ``ID``: the catalogue ID (``"yt-fig13"``);
- ``ANALYSES``: the analyses whose runs it reads (``("phi_curve",)``);
- ``NEEDS``: analysis -> the recorded keys it reads: ``"probe/quantity"`` or ``"scalars/name"`` for training
  runs, array names for computed results; checked before drawing;
- ``CLAIM``: what the document claims the item shows (printed next to the figure in the gallery);
- ``TRAINED_NETS``: True when the claim is about trained nets; then ``draw`` passes the runs it shows to
  :func:`chance_check`, whose text goes into the caption (``tests/figures/test_chance.py`` enforces both);
- ``draw(inputs: FigureInputs, out_dir: Path) -> FigureOutput``.

A figure reads HDF5 only: it never trains and never builds a model.
"""

from __future__ import annotations

import functools
import os
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import h5py  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from gradlens.data import num_classes  # noqa: E402
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


def grad_profile(
    run: Recorded, quantity: str, steps: tuple[int, int] | None = None, probe: str = "grad_stats"
) -> tuple[list[str], np.ndarray]:
    """Layer names and the per-layer mean of ``quantity`` over the records with steps in ``steps``
    (inclusive; all records when None)."""
    recorded, values, _, labels = run.array(probe, quantity)
    if steps is not None:
        keep = (recorded >= steps[0]) & (recorded <= steps[1])
        values = values[keep]
    return list(labels["layer"]), values.mean(axis=0)


def values_of(runs: Sequence[Recorded], key: str) -> list:
    """Sorted distinct values of config ``key`` over ``runs``."""
    return sorted({config(r)[key] for r in runs})


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


CHANCE_MARGIN = 0.1
"""A net is *near chance* when its final test accuracy a has (a − 1/K) / (1 − 1/K) < CHANCE_MARGIN."""


def final_test_accuracy(recorded: Recorded) -> float | None:
    """The final test accuracy of a run: the last ``test_acc`` scalar of a training run, or the
    ``final/test_acc`` / ``final_test_acc`` array of a computed result; None when none was recorded."""
    if isinstance(recorded, Result):
        for key in ("final/test_acc", "final_test_acc"):
            if key in recorded.arrays:
                return float(np.asarray(recorded[key]).reshape(-1)[-1])
        return None
    frame = recorded.scalars()
    values = frame.loc[frame["name"] == "test_acc", "value"].to_numpy()
    return float(values[-1]) if values.size else None


GENERATED_CLASSES = {"brackets": 2}
"""K of the tasks the analyses generate themselves (``brackets``: balanced or not, :mod:`analyses.sc_encoder`)."""


def run_classes(recorded: Recorded) -> int:
    """K of a run: ``num_classes`` of its configuration, else that of its ``dataset``."""
    c = config(recorded)
    if "num_classes" in c:
        return int(c["num_classes"])
    return GENERATED_CLASSES.get(c["dataset"]) or num_classes(c["dataset"])


@dataclass
class ChanceCheck:
    """Which of an item's nets ended near chance (see :func:`chance_check`).

    Attributes:
        near: ``(net, seed, dataset, accuracy, chance)`` of every run near chance.
        unchecked: labels of the runs that recorded no test accuracy.
        checked: number of runs with a test accuracy.
        lowest: ``(label, accuracy)`` of the least accurate checked run, or None.
        margin: the margin used.
    """

    near: list[tuple[str, object, str, float, float]]
    unchecked: list[str]
    checked: int
    lowest: tuple[str, float] | None
    margin: float

    @property
    def text(self) -> str:
        """Caption text: each net near chance by name and seed, or that all nets trained."""
        parts = []
        if self.near:
            by_net: dict[tuple[str, str, float], list[str]] = {}
            for net, seed, dataset, acc, chance in self.near:
                by_net.setdefault((net, dataset, chance), []).append(f"{seed} ({100 * acc:.1f} %)")
            listed = "; ".join(
                f"{net} on {dataset}, seed{'s' if len(seeds) > 1 else ''} {', '.join(seeds)}"
                for (net, dataset, _), seeds in by_net.items()
            )
            chances = sorted({f"{100 * chance:.3g} %" for *_, chance in self.near})
            parts.append(
                f"NEAR CHANCE (did not train): {len(self.near)} of {self.checked} nets end with test accuracy "
                f"within {100 * self.margin:.0f} % of the way from chance ({', '.join(chances)}) to 100 %: {listed}. "
                "What this item shows for them is about nets that did not learn, not the document's trained nets."
            )
        elif self.checked:
            label, acc = self.lowest
            parts.append(
                f"All {self.checked} nets trained (final test accuracy above chance + {100 * self.margin:.0f} % of "
                f"the way to 100 %; lowest {100 * acc:.1f} %, {label})."
            )
        if self.unchecked:
            parts.append(f"Not checked against chance (no test accuracy recorded): {', '.join(self.unchecked)}.")
        return " ".join(parts)

    def annotate(self, caption: str, numbers: dict[str, object]) -> str:
        """``caption`` with :attr:`text` (first when nets are near chance, else last); adds ``nets near chance``
        (count) to ``numbers``."""
        numbers["nets near chance"] = len(self.near)
        if not self.text:
            return caption
        return f"{self.text} {caption}" if self.near else f"{caption} {self.text}"


def chance_check(runs: Iterable[Recorded], margin: float = CHANCE_MARGIN) -> ChanceCheck:
    """Compare each run's final test accuracy a with chance 1/K.

    A run is near chance when (a − 1/K) / (1 − 1/K) < ``margin``, i.e. a < 1/K + margin·(1 − 1/K): with
    K = 10 and the default margin 0.1, below 19 % (a net collapsed to one class scores about 10 %).

    Args:
        runs: the runs an item shows (training runs or computed results with ``final/test_acc``).
        margin: fraction of the distance from chance to 100 % a net must exceed to count as trained.

    Returns:
        A :class:`ChanceCheck`; put ``.annotate(caption, numbers)`` into the item's output.
    """
    near, unchecked, checked, lowest = [], [], 0, None
    unique = {str(getattr(run, "path", id(run))): run for run in runs}  # a run shown twice counts once
    for run in unique.values():
        c = config(run)
        label = f"{c.get('model', c.get('analysis', '?'))} seed {c.get('seed', '?')}"
        acc = final_test_accuracy(run)
        if acc is None:
            unchecked.append(label)
            continue
        checked += 1
        chance = 1 / run_classes(run)
        if lowest is None or acc < lowest[1]:
            lowest = (label, acc)
        if (acc - chance) / (1 - chance) < margin:
            near.append((str(c.get("model", c.get("analysis", "?"))), c.get("seed", "?"), str(c.get("dataset", "?")),
                         acc, chance))
    return ChanceCheck(near, unchecked, checked, lowest, margin)


def save_figure(fig: plt.Figure, out_dir: Path, item_id: str) -> list[Path]:
    """Write ``<id>.png`` and ``<id>.pdf`` into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = [out_dir / f"{item_id}.png", out_dir / f"{item_id}.pdf"]
    for path in files:
        fig.savefig(path, dpi=130 if path.suffix == ".png" else None, bbox_inches="tight")
    return files


def save_table(
    table: pd.DataFrame, out_dir: Path, item_id: str, caption: str | None = None, inputs: FigureInputs | None = None
) -> list[Path]:
    """Write ``<id>.md`` (Markdown) and ``<id>.csv`` into ``out_dir``.

    With ``caption`` (the text the gallery shows) and ``inputs`` the files say what they are: the Markdown file
    starts with the caption and a provenance line (:func:`provenance`), the CSV file with the same text as
    ``# `` comment lines, so ``pd.read_csv(path, comment="#")`` still reads the table back (as long as no cell
    holds a ``#``)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    markdown, csv = out_dir / f"{item_id}.md", out_dir / f"{item_id}.csv"
    notes = [text for text in (caption, provenance(item_id, inputs) if caption or inputs else None) if text]
    head = "".join(f"{text}\n\n" for text in notes)
    markdown.write_text(head + _markdown(table), encoding="utf-8")
    with csv.open("w", encoding="utf-8", newline="") as file:
        file.writelines(f"# {line}\n" for text in notes for line in text.splitlines())
        table.to_csv(file, index=False)
    return [markdown, csv]


def provenance(item_id: str, inputs: FigureInputs | None = None) -> str:
    """'Provenance: <id>; data: …; scale: …; seeds: …; epochs: …; gradlens <version> (git <commit>); written <UTC
    time>.' — what the item read (from ``inputs``), with which code, when."""
    import gradlens

    parts = [f"Provenance: {item_id}"]
    if inputs is not None:
        runs = [run for group in inputs.runs.values() for run in group]
        read = ", ".join(f"{analysis} ({len(group)} files)" for analysis, group in inputs.runs.items())
        parts += [describe(runs, inputs.scale).rstrip("."), f"read: {read}"]
    commit = git_commit()
    parts.append(f"gradlens {gradlens.__version__}" + (f" (git {commit})" if commit else ""))
    parts.append(f"written {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    return "; ".join(parts) + "."


@functools.cache
def git_commit() -> str | None:
    """Short commit of the checkout the figures run from, '+modified' when tracked files differ from it; None
    outside a git checkout or without git."""
    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+modified" if dirty else "") if head else None


def _markdown(table: pd.DataFrame) -> str:
    header = "| " + " | ".join(str(c) for c in table.columns) + " |"
    rule = "|" + "|".join("---" for _ in table.columns) + "|"
    rows = ["| " + " | ".join(_cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join([header, rule, *rows]) + "\n"


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
