"""Runs on data that may be absent: a refused or missing dataset leaves a not-run marker with the reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from analyses.optional_data import is_not_run, load_or_mark, not_run_reason
from gradlens.data import DatasetIdentityError, locate
from gradlens.results import load_result

MNIST_10K = Path(__file__).resolve().parents[3] / "shared/data/mnist-10k"


def test_refused_fashion_mnist_leaves_a_not_run_marker_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What `gradlens figures --data-dir .../mnist-10k` does for van-fig1's Fashion-MNIST panel on a machine
    without Debian's Fashion-MNIST package (hidden here)."""
    if not (MNIST_10K / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"the shared MNIST subset is not on this machine (looked for {MNIST_10K})")
    monkeypatch.setattr(locate, "INSTALLED_DATA_DIRS", ())
    params = {"dataset": "fashion_mnist", "n_train": 100, "n_test": 50, "optional_data": True}
    path = tmp_path / "run.h5"
    assert load_or_mark(params, path, str(MNIST_10K)) is None
    marker = load_result(path)
    assert is_not_run(marker)
    assert not_run_reason(marker).startswith(f"fashion_mnist was refused (fashion_mnist: refused {MNIST_10K}: its")
    with pytest.raises(DatasetIdentityError):
        load_or_mark({**params, "optional_data": False}, tmp_path / "other.h5", str(MNIST_10K))
