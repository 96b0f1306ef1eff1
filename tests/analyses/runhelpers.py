"""Shared by the runner/executor tests: the test-only analyses and a comparison of two runs' files."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # testing_analyses.* (what a spawned or Ray worker imports via PYTHONPATH too)
    sys.path.insert(0, str(HERE))

# datasets that hold wall-clock times, not values
CLOCK = ("time", "wall", "elapsed", "timestamp", "duration", "seconds", "created", "flush")


def flaky_item(item_id: str = "test-flaky") -> SimpleNamespace:
    """A figure module drawing from ``testing_analyses.flaky`` (what make_figures needs of one)."""
    from figures.base import FigureOutput

    def draw(inputs, out_dir):
        (run,) = inputs.runs["testing_analyses.flaky"]
        return FigureOutput([], f"{len(run.scalars())} scalars", {"steps": int(run.meta.get("train", {}) != {})})

    return SimpleNamespace(ID=item_id, ANALYSES=("testing_analyses.flaky",), NEEDS={}, CLAIM="test", draw=draw)


def datasets(path: Path) -> dict[str, np.ndarray]:
    """Every dataset of an HDF5 file (compound tables as structured arrays), clock-valued ones left out."""
    out: dict[str, np.ndarray] = {}

    def visit(name: str, node: object) -> None:
        if isinstance(node, h5py.Dataset) and not any(word in name.lower() for word in CLOCK):
            out[name] = node[()]

    with h5py.File(path, "r", locking=False) as file:
        file.visititems(visit)
    return out


def assert_same_values(a: Path, b: Path) -> int:
    """Every dataset of ``a`` equals the one of ``b`` exactly (NaN equal to NaN); returns how many were compared."""
    left, right = datasets(a), datasets(b)
    assert sorted(left) == sorted(right), (a, b)
    for name, value in left.items():
        other = right[name]
        if value.dtype.names:  # compound table: field by field
            for field in value.dtype.names:
                if any(word in field.lower() for word in CLOCK):
                    continue
                _equal(value[field], other[field], f"{a}:{name}.{field}")
        else:
            _equal(value, other, f"{a}:{name}")
    return len(left)


def _equal(x: np.ndarray, y: np.ndarray, where: str) -> None:
    x, y = np.asarray(x), np.asarray(y)
    if x.dtype.kind in "fc":
        assert x.shape == y.shape, (where, x.shape, y.shape)
        assert np.array_equal(x, y, equal_nan=True), (where, float(np.nanmax(np.abs(x - y))))
    else:
        assert np.array_equal(x, y), where
