"""Readers shared by the document-002 and document-003 figures (scalars, seeds, not-run markers)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from analyses.optional_data import is_not_run, not_run_reason
from figures.base import Recorded, config

__all__ = ["is_not_run", "mean_sd", "not_run_reason", "split_not_run"]


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (NaN for one value)."""
    array = np.asarray(values, dtype=float)
    return float(array.mean()), float(array.std(ddof=1)) if array.size > 1 else float("nan")


def split_not_run(runs: Sequence[Recorded]) -> tuple[list[Recorded], list[str]]:
    """(runs that ran, distinct reasons of those marked not run)."""
    ran = [r for r in runs if not is_not_run(r)]
    reasons = sorted({not_run_reason(r) for r in runs if is_not_run(r)})
    return ran, reasons


def values_of(runs: Sequence[Recorded], key: str) -> list:
    """Sorted distinct values of config ``key`` over ``runs``."""
    return sorted({config(r)[key] for r in runs})
