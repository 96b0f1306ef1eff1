"""``--plan`` and the data folders: runs whose data is absent or refused are listed as not run, not counted as
work; ``--data-dir`` names several folders."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from analyses.optional_data import load_or_mark
from analyses.runner import plan
from figures import cli
from gradlens.data import locate

MNIST_10K = Path(__file__).resolve().parents[3] / "shared/data/mnist-10k"
FASHION_PACKAGE = Path("/usr/share/datasets/fashion-mnist")
STEPS = 60 * 15 * 63  # van-fig1 at quick: 60 runs × 15 epochs × ⌈8000 / 128⌉ steps (8000 images of either dataset)


def rows(lines: list[str]) -> dict[tuple[str, str], list[str]]:
    """(item, analysis) -> the row's columns runs, reuse, resume, do, steps, time."""
    return {(p[0], p[1]): p[2:] for p in (line.split() for line in lines) if len(p) >= 8 and p[2].isdigit()}


@pytest.fixture
def mnist_10k() -> Path:
    if not (MNIST_10K / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"the shared MNIST subset is not on this machine (looked for {MNIST_10K})")
    return MNIST_10K


def test_refused_fashion_mnist_runs_are_not_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mnist_10k: Path
) -> None:
    """Issue 24.7: `--plan --data-dir .../mnist-10k` counted the refused Fashion-MNIST runs as 1.2 h of work."""
    monkeypatch.setattr(locate, "INSTALLED_DATA_DIRS", ())  # a machine without Debian's package
    lines = cli.plan_lines(["van-fig1"], "quick", tmp_path, data_dir=str(mnist_10k), measure=False)
    table = rows(lines)
    assert table["van-fig1", "van_thin"][:5] == ["60", "0", "0", "60", f"{STEPS:,}"]
    assert table["van-fig1", "van_thin_fashion"][:5] == ["60", "0", "0", "0", "0"]
    (reason,) = [line.strip() for line in lines if line.strip().startswith("not run (")]
    assert reason.startswith(f"not run (60 runs): fashion_mnist was refused (fashion_mnist: refused {mnist_10k}: ")
    (total,) = [line for line in lines if line.startswith("distinct runs: ")]
    assert total.startswith(f"distinct runs: 120 (60 to do, 0 to reuse, 60 not run for lack of data); {STEPS:,} ")


def test_found_fashion_mnist_runs_are_work_and_a_marker_is_not_a_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mnist_10k: Path
) -> None:
    if not (FASHION_PACKAGE / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"Debian's package dataset-fashion-mnist is not installed (no {FASHION_PACKAGE})")
    # a not-run marker left by an earlier invocation on a machine without the data
    (first,) = plan("van_thin_fashion", "quick")[:1]
    path = first.path(tmp_path / "runs")
    path.parent.mkdir(parents=True)
    with monkeypatch.context() as hidden:
        hidden.setattr(locate, "INSTALLED_DATA_DIRS", ())
        assert load_or_mark(first.params, path, str(mnist_10k)) is None
    lines = cli.plan_lines(["van-fig1"], "quick", tmp_path, data_dir=str(mnist_10k), measure=False)
    assert rows(lines)["van-fig1", "van_thin_fashion"][:5] == ["60", "0", "0", "60", f"{STEPS:,}"]
    assert not [line for line in lines if "not run (" in line]


def test_data_dir_is_repeatable_and_takes_path_lists(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    args = cli.build_parser().parse_args(["--data-dir", "a", "--data-dir", f"b{os.pathsep}/c"])
    assert args.data_dir == ["a", f"b{os.pathsep}/c"]
    assert cli.data_dir_arg(args.data_dir) == os.pathsep.join([str(tmp_path / "a"), str(tmp_path / "b"), "/c"])
    assert cli.data_dir_arg(None) is None
