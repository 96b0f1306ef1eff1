"""Blocks of records at screen resolution (gradlens.report.blocks): the block ladder, blocks equal to a
brute-force reduction of the records (stored-summary and in-memory routes alike), incremental reads from a
block boundary, and the words that state a view's resolution."""

from __future__ import annotations

import numpy as np
import pytest
from synthetic_runs import ProbeData, RunData, write_run

import gradlens
from gradlens.probes.base import Quantity
from gradlens.report.blocks import LADDER, MAX_POINTS, Stream, block_for, count_in_blocks, resolution

LAYERS = ["a.weight", "b.weight", "c.weight"]


def brute(steps, values, block, first=0):
    """min / max / mean / last per block of ``block`` records, aligned to the record index ``first``."""
    out = []
    index = np.arange(first, first + len(steps))
    for k in np.unique(index // block):
        rows = np.flatnonzero(index // block == k)
        chunk = values[rows]
        out.append((steps[rows[0]], steps[rows[-1]], len(rows), chunk.min(0), chunk.max(0), chunk.mean(0), chunk[-1]))
    return out


def long_run(path, n=300, every=2):
    rng = np.random.default_rng(0)
    steps = list(range(0, n * every, every))
    values = rng.uniform(1, 2, (n, len(LAYERS))).astype(np.float32)
    probe = ProbeData("g", "Thing", {"v": Quantity((3,), ("layer",), {"layer": LAYERS})}, steps, {"v": values})
    scalars = [(s, "loss", float(1 + np.sin(s))) for s in steps]
    return gradlens.load(write_run(path, RunData([probe], scalars))), np.array(steps), values


def test_block_ladder_keeps_points_under_the_screen():
    assert LADDER[:6] == (1, 2, 4, 8, 16, 32) and LADDER[6] == 128
    assert block_for(0) == 1 and block_for(MAX_POINTS) == 1 and block_for(MAX_POINTS + 1) == 2
    assert block_for(16 * MAX_POINTS) == 16 and block_for(16 * MAX_POINTS + 1) == 32
    assert block_for(10**5) == 128 and block_for(10**6) == 2048
    for n in (1, 999, 5000, 10**5, 10**6, 10**8):
        b = block_for(n)
        assert -(-n // b) <= MAX_POINTS and (b == 1 or -(-n // LADDER[LADDER.index(b) - 1]) > MAX_POINTS)
    with pytest.raises(ValueError, match="max_points must be >= 1, got 0"):
        block_for(10, 0)


@pytest.mark.parametrize("block", [1, 4, 16, 32, 128])
def test_blocks_equal_the_records_reduced_by_hand(tmp_path, block):
    run, steps, values = long_run(tmp_path / "r.h5")
    got = Stream(run, "g", "v").blocks(block)
    want = brute(steps, values.astype(np.float64), block)
    assert got.block == block and len(got.count) == len(want)
    for k, (first, last, count, low, high, mean, final) in enumerate(want):
        assert (got.first_step[k], got.last_step[k], got.count[k]) == (first, last, count)
        np.testing.assert_array_equal(got.min[k], low)
        np.testing.assert_array_equal(got.max[k], high)
        np.testing.assert_allclose(got.mean[k], mean, rtol=1e-6)  # float32 statistics: float32 means
        np.testing.assert_array_equal(got.last[k], final)
    scalar = Stream(run, None, "loss").blocks(block)
    loss = np.array([1 + np.sin(s) for s in steps])
    want = brute(steps, loss, block)
    np.testing.assert_allclose(scalar.mean, [w[5] for w in want], rtol=1e-12)
    np.testing.assert_array_equal(scalar.first_step, [w[0] for w in want])


@pytest.mark.parametrize("block", [8, 32])
def test_blocks_from_a_block_boundary_continue_the_first_read(tmp_path, block):
    run, steps, values = long_run(tmp_path / "r.h5")
    whole = Stream(run, "g", "v").blocks(block)
    k = 3  # a reader that holds blocks 0..3 asks again from block 3 (it may have been partial)
    tail = Stream(run, "g", "v").blocks(block, start_record=k * block, start_step=int(whole.first_step[k]))
    np.testing.assert_array_equal(tail.first_step, whole.first_step[k:])
    np.testing.assert_array_equal(tail.mean, whole.mean[k:])
    np.testing.assert_array_equal(tail.max, whole.max[k:])
    with pytest.raises(ValueError, match="start_record 5 is not a multiple of the block 8"):
        Stream(run, "g", "v").blocks(8, start_record=5, start_step=10)


def test_resolution_words_and_counts_of_a_marker(tmp_path):
    run, _, _ = long_run(tmp_path / "r.h5")
    single = Stream(run, "g", "v").blocks(1)
    assert resolution(1, single.first_step, single.last_step) == ""
    blocks = Stream(run, "g", "v").blocks(32)
    text = resolution(32, blocks.first_step, blocks.last_step, "column", "mean")
    assert text == (
        "Resolution: each column is the mean over a block of 32 consecutive records (64 steps; 10 blocks, "
        "the last may be partial)."
    )
    # GradStats' nonfinite: -1 (no gradient), 0, or a positive count of NaN/Inf entries
    flags = np.zeros((64, 2))
    flags[:20, 0] = -1
    flags[40, 1] = -1
    flags[41, 1] = 3
    quantity = Quantity((2,), ("layer",), {"layer": ["x", "y"]})
    probe = ProbeData("n", "Thing", {"f": quantity}, list(range(64)), {"f": flags})
    summary = Stream(gradlens.load(write_run(tmp_path / "f.h5", RunData([probe]))), "n", "f").blocks(32)
    counts, exact = count_in_blocks(summary, -1.0)
    np.testing.assert_array_equal(counts, [[20, 0], [0, 1]])
    np.testing.assert_array_equal(exact, [[True, True], [True, False]])  # block 2 of y: 1 is a lower bound


def test_scalar_count_follows_a_file_being_written(tmp_path):
    from gradlens.recorder import Recorder
    from gradlens.report.blocks import scalar_count

    path = tmp_path / "live.h5"
    recorder = Recorder(path, meta={"probes": []}, flush_every=10_000, flush_seconds=3600)
    recorder.start([{"name": "fc0", "kind": "linear", "shape": [4, 4], "params": 16}], {})
    for step in range(50):
        recorder.log_scalars(step, loss=1.0)
    recorder.flush()
    assert scalar_count(gradlens.load(path), "loss") == 50
    for step in range(50, 120):
        recorder.log_scalars(step, loss=1.0)
    recorder.flush()
    assert scalar_count(gradlens.load(path), "loss") == 120  # a new flush: counted again, not remembered
    recorder.close()
    assert scalar_count(gradlens.load(path), "loss") == 120
