"""The gradlens command line: demo, report, compare, info; one-line errors with exit status 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

import gradlens
from gradlens.cli import main


def test_demo_writes_runs_and_report_and_refuses_to_overwrite(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--depth", "6", "--epochs", "1", "--quiet"]) == 0
    assert f"report: {out / 'report.html'}" in capsys.readouterr().out
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 4
    assert "digits" in page and "seed 0" in page
    plain, residual = gradlens.load(out / "plain.h5"), gradlens.load(out / "residual.h5")
    assert plain.status == residual.status == "finished"
    assert len(plain.layers) == len(residual.layers) == 8  # stem + 6 blocks + head
    assert plain.meta["config"]["train"]["device"] == "cpu"  # --device auto: the CPU on a machine without a GPU
    before = (out / "plain.h5").read_bytes()
    assert main(["demo", "--out", str(out), "--depth", "6", "--epochs", "1", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--force" in err
    assert (out / "plain.h5").read_bytes() == before


def test_report_compare_info(tmp_path, capsys):
    out = tmp_path / "demo"
    main(["demo", "--out", str(out), "--depth", "3", "--epochs", "1", "--quiet"])
    capsys.readouterr()
    assert main(["report", str(out / "plain.h5")]) == 0
    assert (out / "plain.html").exists()
    assert main(["report", str(out / "plain.h5")]) == 2  # exists, no --force
    assert (
        main(["compare", str(out / "plain.h5"), str(out / "residual.h5"), "--out", str(tmp_path / "c.html")])
        == 0
    )
    assert "Runs overlaid" in (tmp_path / "c.html").read_text()
    capsys.readouterr()
    assert main(["info", str(out / "residual.h5")]) == 0
    text = capsys.readouterr().out
    assert "status:  finished" in text and "blocks.0.fc" in text and "grad_stats" in text


def exit_code(argv: list[str]) -> int:
    """main's return value, or the status of the SystemExit argparse raises."""
    try:
        return main(argv)
    except SystemExit as stop:
        return int(stop.code)


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["info", "missing.h5"], "missing.h5"),
        (["demo", "--depth", "1"], "depth"),
        (["demo", "--epochs", "zero"], "invalid int value"),
        (["demo", "--device", "gpu"], "device 'gpu' is not supported; use auto, cpu, cuda or cuda:K"),
        (["demo", "--device", "cuda:1"], "device 'cuda:1' is not available: torch sees no CUDA device"),
        (["compare", "only.h5"], "at least two"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(argv, fragment, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert exit_code(argv) == 2
    err = capsys.readouterr().err.strip()
    assert fragment in err and err.count("\n") == 0


def test_console_script_help_runs():
    result = subprocess.run([sys.executable, "-m", "gradlens.cli", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "demo" in result.stdout and "compare" in result.stdout
