"""The report of a long run reads what the screen needs (issue 23.3): on a 20 000-record file no view reads a
stream's whole range of records (``Run.array``/``Run.scalar`` refuse it here), the records read are a few
hundred values (and the doctor at most ``FULL_RECORDS`` single values of a long scalar), and every drawn band
equals a brute-force min / mean / max of the raw records per block; each summary view says its resolution."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest

import gradlens
from gradlens.loader import Run
from gradlens.probes.base import Quantity
from gradlens.recorder import Recorder
from gradlens.report import build, write_report

LAYERS = ["fc0.weight", "fc1.weight", "fc2.weight", "fc3.weight"]
N = 20_000
BLOCK = 32  # gradlens.report.blocks.block_for(20 000): the smallest block giving <= 1024 points


@pytest.fixture(scope="module")
def long_file(tmp_path_factory):
    """GradStats-like statistics of 4 layers and a loss at every one of 20 000 steps (through the Recorder)."""
    path = tmp_path_factory.mktemp("long") / "long.h5"
    rng = np.random.default_rng(0)
    scale = np.array([1e-1, 1e-2, 1e-3, 1e-4])
    mean_abs = (scale * rng.uniform(0.5, 1.5, (N, 4))).astype(np.float32)
    norm = (20 * mean_abs).astype(np.float32)
    loss = 2.3 * np.exp(-np.arange(N) / 4000) + 0.1 * rng.uniform(0, 1, N)
    per_layer = {"layer": LAYERS}
    quantities = {q: Quantity((4,), ("layer",), per_layer) for q in ("mean_abs", "norm", "nonfinite")}
    meta = {"probes": [{"name": "g", "class": "GradStats", "schedule": "every step"}], "config": {"label": "long"}}
    recorder = Recorder(path, meta=meta, flush_every=4096, flush_seconds=3600)
    layers = [{"name": n[:-7], "kind": "linear", "shape": [4, 4], "params": 16} for n in LAYERS]
    recorder.start(layers, {"g": quantities})
    zeros = np.zeros(4)
    for step in range(N):
        recorder.record("g", step, {"mean_abs": mean_abs[step], "norm": norm[step], "nonfinite": zeros})
        recorder.log_scalars(step, loss=float(loss[step]))
    recorder.close()
    return str(path), mean_abs.astype(np.float64), norm.astype(np.float64), loss


def brute(values: np.ndarray, block: int = BLOCK):
    """(min, mean, max) per block of ``block`` consecutive records, brute force."""
    cut = [values[k : k + block] for k in range(0, len(values), block)]
    return np.array([c.min(0) for c in cut]), np.array([c.mean(0) for c in cut]), np.array([c.max(0) for c in cut])


@pytest.fixture
def counted(monkeypatch):
    """Count the record values ``Run.array`` and ``Run.scalar`` return; refuse a whole long stream."""
    read = {"values": 0}
    array, scalar = Run.array, Run.scalar

    def guarded_array(self, probe, quantity, start=None, stop=None, stride=None, layers=None):
        whole = start is None and stop is None and stride is None
        if whole and self.n_records(probe) > 4096:
            raise AssertionError(f"the report read every record of {probe}/{quantity}")
        out = array(self, probe, quantity, start, stop, stride, layers)
        read["values"] += out[1].size
        return out

    def guarded_scalar(self, name, start=None, stop=None, stride=None):
        if start is None and stop is None and stride is None:
            raise AssertionError(f"the report read every record of the scalar {name}")
        out = scalar(self, name, start, stop, stride)
        read["values"] += out[1].size
        return out

    monkeypatch.setattr(Run, "array", guarded_array)
    monkeypatch.setattr(Run, "scalar", guarded_scalar)
    yield read
    plt.close("all")


def test_long_report_reads_summaries_and_bands_equal_the_records(long_file, counted, tmp_path):
    path, mean_abs, norm, loss = long_file
    report = build([gradlens.load(path)])
    # of 20 000 × (4 × 3 + 1) = 260 000 stored: the views' few hundred, and the doctor's every 3rd loss value (it
    # reads a long scalar as at most FULL_RECORDS single values, so that its medians keep their noise)
    from gradlens.doctor.evidence import FULL_RECORDS

    assert counted["values"] <= 2000 + FULL_RECORDS, counted
    kinds = {s.kind: s for s in report.sections}
    # the heat map: one column per block of 32 records, the block means
    heat = kinds["heatmap"].data["long"]
    low, mean, high = brute(mean_abs)
    np.testing.assert_allclose(heat["values"], mean, rtol=1e-6)
    np.testing.assert_array_equal(heat["steps"], np.arange(0, N, BLOCK))
    assert "each column is the mean over a block of 32 consecutive records (32 steps; 625 blocks" in (
        kinds["heatmap"].caption
    )
    # the loss: mean line and min–max band per block
    (scalars,) = [s for s in report.sections if s.kind == "scalars"]
    drawn = scalars.data[("loss", "long", "loss")]
    low, mean, high = brute(loss)
    np.testing.assert_allclose(drawn["values"], mean, rtol=1e-12)
    np.testing.assert_array_equal(drawn["low"], low)
    np.testing.assert_array_equal(drawn["high"], high)
    assert "each point is the mean (band: min–max over the block's records) over a block of 32" in scalars.caption
    # the global norm: the band holds every record's √(Σ ‖g_ℓ‖²)
    total = report.sections[[s.title for s in report.sections].index("Global gradient norm")].data["long"]
    per_record = np.sqrt((norm**2).sum(axis=1))
    lows, _, highs = brute(per_record)
    assert (total["low"] <= lows * (1 + 1e-6)).all() and (total["high"] >= highs * (1 - 1e-6)).all()
    # the whole page: verdict first, read from the stored summary
    out = tmp_path / "long.html"
    write_report([gradlens.load(path)], out)
    text = out.read_text()
    assert "doctor verdict at step 19 999 of a finished run, from its summary (blocks of 32 records" in text
    assert out.stat().st_size < 5e6


def test_step_ticks_of_long_runs_are_short():
    from gradlens.report.views.drawing import step_text

    assert [step_text(v) for v in (0, 950, 9999, 10_000, 36_000, 1_250_000)] == [
        "0", "950", "9999", "10k", "36k", "1.25M"
    ]
