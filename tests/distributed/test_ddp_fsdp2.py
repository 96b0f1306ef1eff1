"""Two gloo processes on CPU: DDP and FSDP2 runs record what a single process records on the global batch."""

from __future__ import annotations

import numpy as np
import pandas as pd

import gradlens
from tests.distributed import scenarios
from tests.distributed.harness import check, run_ranks

STEPS = 4


# A value that can cancel to rounding noise is compared on the scale of a companion quantity of the same step and
# layer: GradStats' signed mean on mean |g|; a cushion's std over the probe batch on the cushions' mean (when every
# sample's cushion is the same, the std is rounding noise of size eps * mean, e.g. 4e-16 against 4.1e-16).
COMPANION_SCALE = {"mean": "mean_abs", "std": "mean"}


def frames_equal(got: pd.DataFrame, expected: pd.DataFrame, rtol: float) -> None:
    """Same rows; values within ``rtol`` of their scale: their own magnitude, or at least that of the companion
    quantity in ``COMPANION_SCALE`` when the frame records it."""
    keys = ["step", "layer", "quantity"]
    assert got[keys].equals(expected[keys])
    a, b = got.value.to_numpy(), expected.value.to_numpy()
    scale = np.abs(b)
    recorded = set(expected.quantity)
    for quantity, companion in COMPANION_SCALE.items():
        rows = (expected.quantity == quantity).to_numpy()
        if rows.any() and companion in recorded:
            values = expected[expected.quantity == companion].set_index(["step", "layer"]).value
            index = pd.MultiIndex.from_frame(expected.loc[rows, ["step", "layer"]])
            scale[rows] = np.maximum(scale[rows], np.abs(values.reindex(index).to_numpy()))
    bad = ~(np.abs(a - b) <= rtol * scale)
    assert not bad.any(), f"{bad.sum()} values differ:\n{got[bad].assign(expected=b[bad]).head(10)}"


def test_ddp_equals_a_single_process_on_the_global_batch(tmp_path):
    path = tmp_path / "ddp" / "run.h5"
    path.parent.mkdir()
    rank0, rank1 = check(run_ranks(scenarios.ddp_session, 2, str(path), STEPS))
    scenarios.reference_session(str(tmp_path / "reference.h5"), STEPS)

    # one file, written by rank 0 only; rank 1 had a recorder that writes nothing and ran no probe
    assert rank0["recorder"] == "Recorder" and rank1["recorder"] == "NullRecorder"
    assert sorted(p.name for p in path.parent.iterdir()) == ["run.h5"]
    assert rank0["step"] == rank1["step"] == STEPS
    # the probe-batch probe ran on rank 0 only, through the module inside the DDP wrapper
    assert rank0["calls"] == {"grad_stats": ["Sequential"] * STEPS, "layer_cushion": ["Sequential"] * STEPS}
    assert rank1["calls"] == {}
    run, reference = gradlens.load(path), gradlens.load(tmp_path / "reference.h5")
    assert run.status == "finished"
    assert run.meta["distributed"] == {"world_size": 2, "backend": "gloo", "writer_rank": 0, "mode": "ddp"}
    assert reference.meta["distributed"] == {"world_size": 1, "backend": None, "writer_rank": 0, "mode": "single"}

    # GradStats of every parameter (wrapper-free names) equal the global-batch run's (float64: rounding only)
    stats, expected = run.frame("grad_stats"), reference.frame("grad_stats")
    assert set(stats.layer) == {
        "0.weight",
        "0.bias",
        "2.weight",
        "2.bias",
        "4.weight",
        "4.bias",
        "6.weight",
        "7.weight",
        "7.bias",
    }
    assert len(stats) == len(expected) == STEPS * 9 * 5
    # GradStats stores its float64-accumulated statistics as float32 (schema 3): two roundings, 1 ulp apart
    frames_equal(stats, expected, rtol=2.5e-7)
    # the probe-batch probe ran on rank 0 through the unwrapped module, with nobody waiting for it
    frames_equal(run.frame("layer_cushion"), reference.frame("layer_cushion"), rtol=1e-9)
    assert len(run.frame("layer_cushion")) > 0
    # both ranks ended with the same weights (DDP kept them in sync; the probes changed nothing)
    for a, b in zip(rank0["weights"], rank1["weights"], strict=True):
        assert a.equal(b)


def test_fsdp2_statistics_of_shards_equal_single_process_values(tmp_path):
    path = tmp_path / "fsdp" / "run.h5"
    path.parent.mkdir()
    rank0, rank1 = check(run_ranks(scenarios.fsdp2_session, 2, str(path), STEPS))
    scenarios.reference_fsdp2(str(tmp_path / "reference.h5"), STEPS)

    # probe-batch probes are refused at attach, by name and with the reason, before any file is touched
    for rank in (rank0, rank1):
        assert "['layer_cushion']" in rank["refused"] and "FSDP2" in rank["refused"]
        assert "all-gather" in rank["refused"]
    assert rank0["recorder"] == "Recorder" and rank1["recorder"] == "NullRecorder"
    # one collective per reduction (sums, maxima) per firing
    assert rank0["collectives"] == rank1["collectives"] == 2 * STEPS
    run, reference = gradlens.load(path), gradlens.load(tmp_path / "reference.h5")
    assert run.meta["distributed"] == {"world_size": 2, "backend": "gloo", "writer_rank": 0, "mode": "fsdp2"}
    frames_equal(run.frame("grad_stats"), reference.frame("grad_stats"), rtol=1e-9)
    for quantity in ("hist", "hist_below", "hist_above", "exp_hist", "exp_zero", "exp_nonfinite"):
        steps, values, _, _ = run.array("grad_stats", quantity)
        ref_steps, ref_values, _, _ = reference.array("grad_stats", quantity)
        assert steps.tolist() == ref_steps.tolist() == list(range(STEPS))
        np.testing.assert_array_equal(values, ref_values)
    # sanity: the histograms count every entry of the whole parameter (inside + outside the edges)
    _, hist, _, _ = run.array("grad_stats", "hist")
    _, below, _, _ = run.array("grad_stats", "hist_below")
    _, above, _, _ = run.array("grad_stats", "hist_above")
    sizes = [42, 7, 35, 5, 15, 3, 3, 3, 3]
    assert (hist.sum(axis=-1) + below + above)[0].tolist() == sizes
    exponents = [run.array("grad_stats", name)[1][0] for name in ("exp_hist", "exp_zero", "exp_nonfinite")]
    assert (exponents[0].sum(axis=(1, 2)) + exponents[1] + exponents[2]).tolist() == sizes


def test_another_writer_rank(tmp_path):
    path = tmp_path / "run.h5"
    rank0, rank1 = check(run_ranks(scenarios.ddp_session, 2, str(path), 2, None, 1))
    assert rank0["recorder"] == "NullRecorder" and rank1["recorder"] == "Recorder"
    assert rank0["calls"] == {} and len(rank1["calls"]["grad_stats"]) == 2
    run = gradlens.load(path)
    assert run.meta["distributed"] == {"world_size": 2, "backend": "gloo", "writer_rank": 1, "mode": "ddp"}
    assert sorted(set(run.frame("grad_stats").step)) == [0, 1]
