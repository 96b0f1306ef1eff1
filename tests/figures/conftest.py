"""Smoke-scale figures, made once per test session into one folder shared by every figure test."""

from __future__ import annotations

import pytest

from figures.cli import make_figures


@pytest.fixture(scope="session")
def smoke_figures(tmp_path_factory):
    """``make(ids) -> {id: FigureOutput}``: draws the items at smoke scale, reusing the runs already made."""
    out = tmp_path_factory.mktemp("figures-smoke")

    def make(*ids: str):
        return make_figures(list(ids), "smoke", out, progress=False)

    make.out = out
    return make
