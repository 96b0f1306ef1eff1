"""What installing gradlens puts in a user's environment (issue 11.10).

The distribution installs the library alone: the repository's ``analyses/`` and ``figures/`` folders are not
importable packages outside the checkout, and ``gradlens --help`` imports neither torch nor the plotting or
HDF5 stack (it used to take about 4 s because the figures plugin imported torch).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import distribution
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "matplotlib", "h5py", "pandas", "numpy", "analyses", "figures")


def test_the_distribution_installs_only_the_gradlens_package():
    top_level = distribution("gradlens").read_text("top_level.txt")
    assert top_level is not None and top_level.split() == ["gradlens"]


def test_figures_and_analyses_are_not_importable_outside_the_checkout(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    code = "import importlib.util as u; print([u.find_spec(n) is None for n in ('figures', 'analyses')])"
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.stdout.strip() == "[True, True]", result.stderr


def test_help_imports_no_heavy_module(tmp_path):
    code = (
        "import contextlib, io, json, sys\n"
        "from gradlens.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.suppress(SystemExit):\n"
        "    main(['--help'])\n"
        f"print(json.dumps([[m for m in {HEAVY!r} if m in sys.modules], 'doctor' in out.getvalue()]))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert json.loads(result.stdout) == [[], True], result.stderr


def test_figures_command_runs_from_any_folder(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    gradlens = Path(sys.executable).with_name("gradlens")
    result = subprocess.run([str(gradlens), "figures", "--list"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[:2] == ["sc-fig1", "sc-fig2"]
