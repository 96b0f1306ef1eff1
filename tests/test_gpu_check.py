"""The device check's CPU dry run (``benchmarks/gpu_check.sh --device cpu --tiny``): every section runs the code
paths a GPU run takes (GradStats through its torch route, the science probes on the "device" against the CPU) at tiny
sizes, its value checks pass, and it prints each number beside its goal; the figure command runs at smoke scale on
the CPU. Ratios are not asserted: they are measured on a GPU, not in a unit test."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.sh"


@pytest.mark.slow
def test_the_cpu_dry_run_passes_and_prints_every_section():
    environment = {**os.environ, "PYTHON": sys.executable}
    done = subprocess.run([str(SCRIPT), "--device", "cpu", "--tiny"], capture_output=True, text=True,
                          env=environment, timeout=900)  # a hang guard, not a speed claim
    out = done.stdout
    assert done.returncode == 0, out[-3000:] + done.stderr[-3000:]
    assert "statistics, exponent slots, linear bins: equal" in out
    assert "a recorded session (resnet_v1_8, 3 steps): norms and counts equal" in out
    assert re.search(r"science probes \(float64 thin_mlp_resnet_5, 3 steps, \d+ quantities\): equal", out)
    for case in ("ResNet-8, batch 4", "MLP 784-64-10, batch 4", "GPT-2-tiny shape, bf16 autocast"):
        assert case in out, case
    assert len(re.findall(r"^  gradstats +[\d.]+ ms/step +[\d.]+x  goal <= 1\.02: (ok|MISSED); ahead of lightning",
                          out, re.M)) == 3
    assert len(re.findall(r"^  gradstats\+exp +[\d.]+ ms/step", out, re.M)) == 3
    assert re.search(r"whole-run overhead \(1 blocks of 4 steps each\): [\d.]+x", out)
    # the figure command runs for real at smoke scale on the CPU: its options and imports are those of the GPU run
    assert re.search(r"^  cpu: \d+ s wall \(ok\)$", out, re.M), out[-2000:]
    assert out.rstrip().endswith("every value check passed")


def test_an_unknown_section_is_refused_by_name():
    environment = {**os.environ, "PYTHON": sys.executable}
    done = subprocess.run([str(SCRIPT), "--device", "cpu", "--sections", "value"], capture_output=True, text=True,
                          env=environment, timeout=300)
    assert done.returncode == 2 and "unknown sections ['value']" in done.stdout
