"""The data tests see only the folders they name: the operating system's dataset folders are hidden unless a
test asks for them (fixture ``installed_fashion_mnist``)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # datafiles

from datafiles import FASHION_PACKAGE  # noqa: E402

from gradlens.data import locate  # noqa: E402

INSTALLED_DATA_DIRS = locate.INSTALLED_DATA_DIRS


@pytest.fixture(autouse=True)
def hide_installed_data(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test finds data it did not name, whatever this machine has installed."""
    monkeypatch.setattr(locate, "INSTALLED_DATA_DIRS", ())
    monkeypatch.delenv("GRADLENS_DATA", raising=False)


@pytest.fixture
def installed_fashion_mnist(monkeypatch: pytest.MonkeyPatch) -> Path:
    """The folder of Debian's package ``dataset-fashion-mnist``, visible again; skips where it is absent."""
    if not (FASHION_PACKAGE / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(
            f"Debian's package dataset-fashion-mnist is not installed (no {FASHION_PACKAGE}); "
            "`.ci/run` installs it (apt-get install -y dataset-fashion-mnist)"
        )
    monkeypatch.setattr(locate, "INSTALLED_DATA_DIRS", INSTALLED_DATA_DIRS)
    return FASHION_PACKAGE
