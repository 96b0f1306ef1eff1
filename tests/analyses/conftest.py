"""Fixtures of the runner/executor tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import runhelpers  # noqa: F401 - puts this folder on sys.path for testing_analyses.*


@pytest.fixture
def flaky(tmp_path, monkeypatch):
    """Sets the markers folder of ``testing_analyses.flaky``; returns a setter of its mode (and the folder)."""
    markers = tmp_path / "markers"
    monkeypatch.setenv("GRADLENS_TEST_MARKERS", str(markers))

    def mode(value: str) -> Path:
        monkeypatch.setenv("GRADLENS_TEST_FLAKY", value)
        return markers

    return mode
