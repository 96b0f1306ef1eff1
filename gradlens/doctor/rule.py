"""The shape of a rule, and what several families of rules share.

A rule is a small object: its ``id`` (the finding's ``rule``), what it ``reads``, the ``severity`` it gives,
its ``thresholds`` (module constants by name, each with the reason for its number; docs/doctor.md repeats
them) and a ``check(evidence)`` that returns findings, or :class:`Unchecked` when the run lacks what the
rule reads, so that a rule that could not be checked is said, never passed in silence.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from gradlens.doctor.evidence import Evidence, LayerSeries
from gradlens.doctor.finding import Finding

SUSTAINED_SHARE = 0.9  # a symptom "appears at step t" when it holds at >= 90 % of the records from t on


@dataclass(frozen=True)
class Unchecked:
    """A rule that could not be checked: which data is missing (``what``) and how to record it (``how``)."""

    what: str
    how: str


class Rule:
    """Base class of the doctor's rules (see the module docstring).

    Class attributes:
        id: the rule id findings carry.
        reads: what the rule reads, in words (probe/quantity, scalars, metadata).
        severity: the severities it gives and when, in words (docs/doctor.md's table).
        thresholds: module-constant name -> the reason for its value.
        live: False for rules about a finished file (status), which the live engine does not run.
    """

    id: ClassVar[str] = ""
    reads: ClassVar[str] = ""
    severity: ClassVar[str] = ""
    thresholds: ClassVar[dict[str, str]] = {}
    live: ClassVar[bool] = True

    def check(self, ev: Evidence) -> list[Finding] | Unchecked:
        """The findings on ``ev`` (empty: checked and fine), or :class:`Unchecked`."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(id={self.id!r})"


def sustained_from(mask: np.ndarray, share: float = SUSTAINED_SHARE, at_end: bool = True) -> int | None:
    """The first index n where ``mask[n]`` holds and keeps holding at >= ``share`` of the records from n on.

    ``at_end``: the last record must hold too (a symptom that went away is not "present from n"). None when
    there is no such index.
    """
    mask = np.asarray(mask, dtype=bool)
    if not len(mask) or (at_end and not mask[-1]):
        return None
    held = np.cumsum(mask[::-1])[::-1]  # records holding from n to the end
    left = np.arange(len(mask), 0, -1)
    candidates = np.flatnonzero(mask & (held >= share * left))
    return int(candidates[0]) if len(candidates) else None


def sustained_columns(mask: np.ndarray, share: float = SUSTAINED_SHARE) -> np.ndarray:
    """:func:`sustained_from` of every column of ``mask`` ``[N, L]`` (``at_end``): ``[L]`` onsets, -1 for none."""
    mask = np.asarray(mask, dtype=bool)
    onset = np.full(mask.shape[1] if mask.ndim == 2 else 0, -1)
    columns = np.flatnonzero(mask[-1]) if mask.size else []
    if not len(columns):  # only columns that hold at the last record can
        return onset
    part = mask[:, columns]
    held = np.cumsum(part[::-1], axis=0, dtype=np.int32)[::-1]
    left = np.arange(len(mask), 0, -1)[:, None]
    candidates = part & (held >= share * left)
    onset[columns] = np.where(candidates.any(axis=0), np.argmax(candidates, axis=0), -1)
    return onset


def weight_columns(ev: Evidence, series: LayerSeries, embeddings: bool = False) -> list[int]:
    """Columns of weight parameters (labels ending in ``weight`` or naming a layer of the layer table).

    Embedding tables are left out unless ``embeddings``: only the rows of a batch's tokens get a gradient, so
    their size says nothing about flow through depth. All columns when none looks like a weight.
    """
    layer_names = {str(row.get("name")) for row in ev.layers}
    names = series.layers
    weights = [i for i, n in enumerate(names) if n.endswith("weight") or n in layer_names]
    rows = weights or list(range(len(names)))
    kept = [i for i in rows if embeddings or "embed" not in names[i].lower()]
    return kept or rows


def parameter_table(ev: Evidence) -> dict[str, dict]:
    """``meta["parameters"]`` by name (empty when not stored)."""
    if "parameters" not in ev._cache:
        ev._cache["parameters"] = {str(p.get("name")): p for p in ev.parameters or []}
    return ev._cache["parameters"]


def spread(count: int, most: int) -> np.ndarray:
    """At most ``most`` indices of ``range(count)``, evenly spread, first and last included."""
    if count <= most:
        return np.arange(count)
    return np.unique(np.linspace(0, count - 1, most).round().astype(int))


def listed(names: Sequence[str], most: int = 6) -> str:
    """``a, b, c and 4 more``."""
    names = list(names)
    return ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most else "")


def span(names: Sequence[str]) -> str:
    """``fc1.weight`` or ``fc1.weight … fc7.weight (7 parameters)`` for a run of layers."""
    names = list(names)
    if len(names) <= 2:
        return " and ".join(names)
    return f"{names[0]} … {names[-1]} ({len(names)} parameters)"
