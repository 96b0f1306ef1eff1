"""The HDF5 recorder: exact round trips, overwrite/resume rules, flush policy, SWMR and a real SIGKILL."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import h5py
import numpy as np
import pytest
import torch

from gradlens.loader import load
from gradlens.probes.base import Quantity
from gradlens.recorder import Recorder
from gradlens.schema import SCHEMA_VERSION, display_precision

LAYERS = [
    {"name": "fc1", "kind": "Linear", "shape": [4, 3], "params": 16, "residual": False},
    {"name": "fc2", "kind": "Linear", "shape": [2, 4], "params": 10, "residual": True},
]
QUANTITIES = {
    "grad": {
        "norm": Quantity((2,), ("layer",)),
        "nonfinite": Quantity((), (), dtype="int64"),
        "hist": Quantity((2, 3), ("layer", "bin"), labels={"bin": ["lo", "mid", "hi"]}, dtype="float32"),
    }
}


def norm_at(step: int) -> np.ndarray:
    """A float64 record whose every bit matters, with a NaN and an Inf at some steps."""
    values = np.array([np.sqrt(step + 2.0) / 3.0, -np.exp(-step / 7.0)])
    if step % 4 == 3:
        values[0] = np.nan
    if step % 5 == 4:
        values[1] = -np.inf
    return values


def hist_at(step: int) -> np.ndarray:
    return (np.arange(6, dtype=np.float32).reshape(2, 3) + np.float32(step) / np.float32(3.0)).astype(
        np.float32
    )


def record_steps(recorder: Recorder, steps, offset: float = 0.0) -> None:
    for step in steps:
        recorder.record(
            "grad",
            step,
            {
                "norm": torch.from_numpy(norm_at(step) + offset),
                "nonfinite": torch.tensor(step % 3),
                "hist": torch.from_numpy(hist_at(step)),
            },
        )
        recorder.log_scalars(step, loss=1.0 / (step + 1.0) + offset, lr=0.1)


def write_run(path, steps=range(10), **kw) -> None:
    with Recorder(path, meta={"config": {"lr": 0.1, "depth": 2}}, **kw) as recorder:
        recorder.start(LAYERS, QUANTITIES)
        record_steps(recorder, steps)


def test_round_trip_is_exact_and_follows_the_documented_layout(tmp_path):
    path = tmp_path / "run.h5"
    recorder = Recorder(path, meta={"config": {"lr": 0.1}}, flush_every=3)
    recorder.log_scalars(0, before_start=7.5)  # buffered until the file has its tables
    recorder.start(LAYERS, QUANTITIES)
    record_steps(recorder, range(10))
    recorder.close()
    recorder.close()  # idempotent

    run = load(path)
    assert run.status == "finished"
    steps, values, axes, labels = run.array("grad", "norm")
    np.testing.assert_array_equal(steps, np.arange(10))
    np.testing.assert_array_equal(
        values, np.stack([norm_at(s) for s in range(10)])
    )  # NaN/Inf kept as they are
    assert axes == ("step", "layer") and labels == {"layer": ["fc1", "fc2"]}
    steps, values, axes, labels = run.array("grad", "hist")
    assert values.dtype == np.float32 and axes == ("step", "layer", "bin")
    np.testing.assert_array_equal(values, np.stack([hist_at(s) for s in range(10)]))
    assert labels == {"bin": ["lo", "mid", "hi"], "layer": ["fc1", "fc2"]}
    _, counts, _, _ = run.array("grad", "nonfinite")
    assert counts.dtype == np.int64 and counts.tolist() == [s % 3 for s in range(10)]
    scalars = run.scalars()
    assert scalars.iloc[0].tolist() == [0, "before_start", 7.5]
    loss = scalars[scalars["name"] == "loss"]
    assert loss["step"].tolist() == list(range(10))
    assert loss["value"].tolist() == [1.0 / (s + 1.0) for s in range(10)]
    assert run.meta["config"] == {"lr": 0.1}
    assert set(run.meta["versions"]) == {"gradlens", "torch", "numpy", "h5py", "hdf5", "python"}

    # The same file read with plain h5py, as docs/schema.md describes it.
    with h5py.File(path, "r") as f:
        assert f.attrs["format"] == "gradlens" and f.attrs["schema_version"] == 5
        assert json.loads(f.attrs["meta"])["config"] == {"lr": 0.1}
        assert f["run/status"][()] == b"finished" and f["run/last_flush"][()] > 0
        assert f["layers"]["name"].tolist() == [b"fc1", b"fc2"] and f["layers"]["params"].tolist() == [16, 10]
        group = f["probes/grad"]
        assert (
            group["n_rows"][()] == 10
            and group["norm"].shape == (10, 2)
            and group["norm"].maxshape == (None, 2)
        )
        assert list(group["hist"].attrs["axes"]) == ["step", "layer", "bin"]
        assert list(group["hist"].attrs["labels_bin"]) == ["lo", "mid", "hi"]
        assert f["scalars/name"].dtype == np.dtype("S64") and f["scalars/n_rows"][()] == 21


def test_refuses_an_existing_file_unless_asked(tmp_path):
    path = tmp_path / "run.h5"
    write_run(path, steps=range(5))
    with pytest.raises(FileExistsError, match=r"run\.h5 already exists; pass overwrite=True"):
        Recorder(path, meta={})
    assert load(path).array("grad", "norm")[0].tolist() == [0, 1, 2, 3, 4]  # untouched
    write_run(path, steps=[7], mode="overwrite")
    assert load(path).array("grad", "norm")[0].tolist() == [7]


def test_resume_drops_records_after_the_step_and_keeps_the_rest(tmp_path):
    path = tmp_path / "run.h5"
    write_run(path, steps=range(10))
    with Recorder(path, meta={"config": {"lr": 0.05}}, mode="resume", resume_step=5) as recorder:
        recorder.start(LAYERS, QUANTITIES)
        record_steps(recorder, range(6, 9), offset=100.0)

    run = load(path)
    steps, values, _, _ = run.array("grad", "norm")
    assert steps.tolist() == list(range(9))
    expected = [norm_at(s) for s in range(6)] + [norm_at(s) + 100.0 for s in range(6, 9)]
    np.testing.assert_array_equal(values, np.stack(expected))
    loss = run.scalars().query("name == 'loss'")
    assert loss["step"].tolist() == list(range(9))
    assert loss["value"].tolist() == [1 / (s + 1) for s in range(6)] + [
        1 / (s + 1) + 100 for s in range(6, 9)
    ]
    assert run.meta["config"] == {"lr": 0.1, "depth": 2}  # the original config stays; the resume is logged
    (resumed,) = run.meta["resumed"]
    assert resumed["step"] == 5 and resumed["meta"] == {"config": {"lr": 0.05}}
    assert not (tmp_path / "run.h5.resume-tmp").exists()


def test_resume_with_another_model_is_refused_and_leaves_the_file_untouched(tmp_path):
    path = tmp_path / "run.h5"
    write_run(path, steps=range(4))
    before = path.read_bytes()
    other_layers = [dict(LAYERS[0]), dict(LAYERS[1], shape=[3, 4])]
    recorder = Recorder(path, meta={}, mode="resume", resume_step=1)
    with pytest.raises(ValueError, match=r"layer table differs .* at row 1"):
        recorder.start(other_layers, QUANTITIES)
    recorder = Recorder(path, meta={}, mode="resume", resume_step=1)
    with pytest.raises(ValueError, match=r"probes \['grad'\] declare other quantities"):
        recorder.start(LAYERS, {"grad": {"norm": Quantity((2,), ("layer",))}})
    assert path.read_bytes() == before and not (tmp_path / "run.h5.resume-tmp").exists()
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        Recorder(tmp_path / "absent.h5", meta={}, mode="resume", resume_step=0)


def test_bad_records_are_refused_with_the_offending_values(tmp_path):
    with Recorder(tmp_path / "run.h5", meta={}) as recorder:
        recorder.start(LAYERS, QUANTITIES)
        good = {"norm": torch.zeros(2), "nonfinite": 0, "hist": np.zeros((2, 3))}
        with pytest.raises(
            ValueError, match=r"probe 'grad' quantity 'norm' at step 3 has shape \(3,\), declared \(2,\)"
        ):
            recorder.record("grad", 3, {**good, "norm": torch.zeros(3)})
        with pytest.raises(ValueError, match=r"returned quantities \['hist', 'norm'\], declared"):
            recorder.record("grad", 3, {"norm": good["norm"], "hist": good["hist"]})
        with pytest.raises(KeyError, match="probe 'other' was not declared"):
            recorder.record("other", 3, good)
        with pytest.raises(ValueError, match="longer than 64 bytes"):
            recorder.log_scalars(3, **{"x" * 65: 1.0})
    with pytest.raises(ValueError, match="JSON-serialisable"):
        Recorder(tmp_path / "b.h5", meta={"dtype": torch.float32})
    with pytest.raises(ValueError, match=r"meta keys \['versions'\] are reserved"):
        Recorder(tmp_path / "c.h5", meta={"versions": 1})
    with pytest.raises(ValueError, match="reserves"):
        Recorder(tmp_path / "d.h5", meta={}).start(LAYERS, {"p": {"step": Quantity((), ())}})


def test_a_run_that_never_started_keeps_its_scalars_and_no_file_exists_before(tmp_path):
    path = tmp_path / "sub" / "run.h5"
    recorder = Recorder(path, meta={"config": {}}, flush_every=1)
    recorder.log_scalars(0, loss=2.5)
    assert not path.exists()  # a writer killed now leaves nothing half-made
    recorder.close()
    run = load(path)
    assert run.probes == [] and run.layers.empty and run.status == "finished"
    assert run.scalars().values.tolist() == [[0, "loss", 2.5]]


def test_an_exception_inside_the_context_marks_the_run_failed(tmp_path):
    path = tmp_path / "run.h5"
    with pytest.raises(RuntimeError, match="boom"), Recorder(path, meta={}) as recorder:
        recorder.start(LAYERS, QUANTITIES)
        record_steps(recorder, range(2))
        raise RuntimeError("boom")
    run = load(path)
    assert run.status == "failed" and run.array("grad", "norm")[0].tolist() == [0, 1]


def on_disk(path, tmp_path) -> int:
    """Committed probe records in a byte copy of a file that is still open: what a crash now would leave."""
    copy = tmp_path / "copy.h5"
    shutil.copyfile(path, copy)
    return len(load(copy).array("grad", "norm")[0])


def test_flush_policy_every_k_records_and_every_t_seconds(tmp_path):
    path = tmp_path / "run.h5"
    recorder = Recorder(path, meta={}, flush_every=4, flush_seconds=3600)
    recorder.start(LAYERS, QUANTITIES)
    good = {"norm": torch.zeros(2), "nonfinite": 0, "hist": np.zeros((2, 3))}
    for step in range(3):
        recorder.record("grad", step, good)
    assert on_disk(path, tmp_path) == 0
    recorder.record("grad", 3, good)
    assert on_disk(path, tmp_path) == 4
    recorder.flush_seconds = 0.05
    recorder.record("grad", 4, good)  # less than 0.05 s after the last flush... on any sane machine
    time.sleep(0.1)
    recorder.record("grad", 5, good)  # ... and this one comes later than that
    assert on_disk(path, tmp_path) == 6
    recorder.close()


WRITER = r"""
import sys, time
import numpy as np, torch
from gradlens.probes.base import Quantity
from gradlens.recorder import Recorder

path = sys.argv[1]
recorder = Recorder(path, meta={"config": {"crash": True}}, flush_every=5, flush_seconds=3600)
recorder.start(
    [{"name": "a", "kind": "Linear", "shape": [2, 2], "params": 6}],
    {"grad": {"norm": Quantity((2,), ("layer",))}},
)
last = {"probe": -1, "scalar": -1}  # the latest step handed to record / log_scalars
commit = recorder.flush

def reporting_flush():
    commit()
    print(last["probe"], last["scalar"], flush=True)

recorder.flush = reporting_flush
step = 0
while True:
    last["scalar"] = step
    recorder.log_scalars(step, loss=1.0 / (step + 1.0))
    last["probe"] = step
    recorder.record("grad", step, {"norm": torch.from_numpy(np.array([np.sqrt(step + 2.0), -step / 3.0]))})
    step += 1
    time.sleep(0.002)
"""


def expected_norm(steps: np.ndarray) -> np.ndarray:
    return np.stack([np.array([np.sqrt(s + 2.0), -s / 3.0]) for s in steps])


@pytest.fixture(scope="module")
def killed_run(tmp_path_factory):
    """A run whose writer (a real subprocess) was SIGKILLed mid-run; also checks reading it while it ran."""
    path = tmp_path_factory.mktemp("crash") / "run.h5"
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    watchdog = threading.Timer(60, proc.kill)
    watchdog.start()
    flushed = []
    try:
        while len(flushed) < 6:
            line = proc.stdout.readline()
            assert line, f"the writer died: {proc.stderr.read()}"
            flushed.append(tuple(int(v) for v in line.split()))
            if len(flushed) == 3:  # SWMR: a second process reads the file while the writer runs
                live = load(path)
                assert live.status == "running" and live.last_flush is not None
                steps = live.array("grad", "norm")[0]
                assert len(steps) >= flushed[-1][0] + 1
                np.testing.assert_array_equal(steps, np.arange(len(steps)))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        watchdog.cancel()
        proc.kill()
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    return path, flushed[-1]


def test_a_sigkilled_writer_leaves_every_flushed_record(killed_run):
    path, (last_probe, last_scalar) = killed_run
    run = load(path)
    assert run.status == "running" and run.meta["config"] == {"crash": True}
    steps, values, _, _ = run.array("grad", "norm")
    assert len(steps) >= last_probe + 1  # records flushed after the last line we read may be there too
    np.testing.assert_array_equal(steps, np.arange(len(steps)))
    np.testing.assert_array_equal(values, expected_norm(steps))
    scalars = run.scalars()
    assert len(scalars) >= last_scalar + 1
    np.testing.assert_array_equal(scalars["step"], np.arange(len(scalars)))
    assert scalars["value"].tolist() == [1.0 / (s + 1.0) for s in range(len(scalars))]


def test_a_killed_run_can_be_resumed(killed_run, tmp_path):
    path = tmp_path / "run.h5"
    shutil.copyfile(killed_run[0], path)
    with Recorder(path, meta={}, mode="resume", resume_step=10) as recorder:
        recorder.start(
            [{"name": "a", "kind": "Linear", "shape": [2, 2], "params": 6}],
            {"grad": {"norm": Quantity((2,), ("layer",))}},
        )
        recorder.record("grad", 11, {"norm": np.array([1.5, 2.5])})
    run = load(path)
    steps, values, _, _ = run.array("grad", "norm")
    assert run.status == "finished" and steps.tolist() == list(range(12))
    np.testing.assert_array_equal(values, np.vstack([expected_norm(np.arange(11)), [[1.5, 2.5]]]))
    assert run.scalars()["step"].tolist() == list(range(11))


@pytest.mark.parametrize("mode, status", [("overwrite", "failed"), ("overwrite", "finished"), ("resume", "failed")])
def test_a_run_closed_before_its_first_step_leaves_the_existing_file_byte_identical(tmp_path, mode, status):
    path = tmp_path / "run.h5"
    write_run(path, steps=range(6))
    before = path.read_bytes()
    recorder = Recorder(path, meta={}, mode=mode, resume_step=2 if mode == "resume" else None, flush_every=1)
    recorder.log_scalars(0, loss=9.0)
    recorder.log_event(0, "warning", "test", "dropped with the run")
    recorder.close(status)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.h5"]  # no temporary copy, no lock file
    assert load(path).array("grad", "norm")[0].tolist() == list(range(6))


def test_events_are_stored_in_order_with_their_step_kind_source_and_message(tmp_path):
    path = tmp_path / "run.h5"
    recorder = Recorder(path, meta={}, flush_every=2)
    recorder.log_event(0, "warning", "session", "before the first step")  # buffered until the file exists
    recorder.start(LAYERS, QUANTITIES)
    recorder.log_event(3, "probe_error", "grad", "NotImplementedError: no forward AD for sdpa ✓")
    recorder.log_event(5, "probe_disabled", "grad", "3 failures in a row")
    recorder.log_event(7, "step_skipped", "GradScaler", "x" * 2000)  # cut at 1024 bytes
    with pytest.raises(ValueError, match=r"event kind 'probe error' must be an identifier"):
        recorder.log_event(8, "probe error", "grad", "")
    recorder.close()
    events = load(path).events()
    assert list(events.columns) == ["step", "kind", "source", "message"]
    assert events["step"].tolist() == [0, 3, 5, 7] and events["step"].dtype == np.int64
    assert events["kind"].tolist() == ["warning", "probe_error", "probe_disabled", "step_skipped"]
    assert events["source"].tolist() == ["session", "grad", "grad", "GradScaler"]
    assert events["message"].tolist()[:3] == [
        "before the first step",
        "NotImplementedError: no forward AD for sdpa ✓",
        "3 failures in a row",
    ]
    assert events["message"][3] == "x" * 1024
    with h5py.File(path, "r") as f:
        assert f["events/n_rows"][()] == 4 and f["events/kind"].dtype == np.dtype("S32")

    with Recorder(path, meta={}, mode="resume", resume_step=4) as recorder:  # events after step 4 are dropped
        recorder.start(LAYERS, QUANTITIES)
        recorder.log_event(5, "warning", "resumed", "again")
    events = load(path).events()
    assert events[["step", "source"]].values.tolist() == [[0, "session"], [3, "grad"], [5, "resumed"]]


def test_schema_version_1_files_stay_readable_with_no_events(tmp_path):
    path = tmp_path / "run.h5"
    write_run(path, steps=range(3))
    with h5py.File(path, "r+") as f:  # what gradlens wrote before /events existed
        del f["events"]
        f.attrs["schema_version"] = 1
    run = load(path)
    assert run.schema_version == 1 and run.array("grad", "norm")[0].tolist() == [0, 1, 2]
    events = run.events()
    assert events.empty and list(events.columns) == ["step", "kind", "source", "message"]
    with Recorder(path, meta={}, mode="resume") as recorder:  # resuming writes the current schema, with events
        recorder.start(LAYERS, QUANTITIES)
        recorder.log_event(3, "warning", "resumed", "now with events")
    run = load(path)
    assert run.schema_version == SCHEMA_VERSION and run.events()["message"].tolist() == ["now with events"]


def test_values_left_on_an_accelerator_cross_to_the_host_in_one_transfer_per_flush(tmp_path, monkeypatch):
    """Issue 15.9: statistics stay on the device between flushes and leave it in one copy per flush.

    No accelerator here: CPU tensors stand in for device tensors (``_on_accelerator`` patched to say yes), and a
    TorchFunctionMode counts the copies into host memory while the recorder flushes 10 records of 3 quantities
    (float64, int64, float32). The stored values must stay exact, NaN and Inf included.
    """
    from torch.overrides import TorchFunctionMode

    import gradlens.recorder.buffers as buffers

    monkeypatch.setattr(buffers, "on_accelerator", lambda value: isinstance(value, torch.Tensor))

    class CountCopies(TorchFunctionMode):
        copies = 0

        def __torch_function__(self, func, types, args=(), kwargs=None):
            if func is torch.Tensor.copy_:
                CountCopies.copies += 1
            return func(*args, **(kwargs or {}))

    path = tmp_path / "run.h5"
    with Recorder(path, meta={}, flush_every=1000) as recorder:
        recorder.start(LAYERS, QUANTITIES)
        record_steps(recorder, range(10))
        with CountCopies():
            recorder.flush()
        assert CountCopies.copies == 1
    run = load(path)
    steps, norms, _, _ = run.array("grad", "norm")
    np.testing.assert_array_equal(norms, np.stack([norm_at(s) for s in steps]))
    np.testing.assert_array_equal(run.array("grad", "nonfinite")[1], np.arange(10) % 3)
    hist = run.array("grad", "hist")[1]
    assert hist.dtype == np.float32
    np.testing.assert_array_equal(hist, np.stack([hist_at(s) for s in steps]))


@pytest.mark.parametrize("fresh", [False, True])
def test_a_record_is_copied_unless_the_probe_declares_its_values_fresh(tmp_path, fresh):
    """A probe that reuses one buffer (changed in place after each record) still gets every value it recorded;
    ``fresh=True`` (``Probe.fresh_values``: new tensors nobody changes) skips only the copy."""
    path = tmp_path / "run.h5"
    recorder = Recorder(path, meta={}, flush_every=100)
    recorder.start(LAYERS[:1], {"probe": {"norm": Quantity((1,), ("layer",))}})
    buffer = torch.zeros(1, dtype=torch.float64)
    for step in range(3):
        value = buffer if not fresh else torch.full((1,), float(step), dtype=torch.float64)
        buffer.fill_(float(step))
        recorder.record("probe", step, {"norm": value}, fresh=fresh)
    buffer.fill_(99.0)  # a reused buffer changes after its records were taken
    recorder.close()
    np.testing.assert_array_equal(load(path).array("probe", "norm")[1][:, 0], [0.0, 1.0, 2.0])


# -- storage that scales (issue 23.2, 23.3) -------------------------------------------------------------------

WIDE = [{"name": f"p{i}", "kind": "Linear", "shape": [2, 2], "params": 6} for i in range(150)]


def wide_norm(step: int) -> np.ndarray:
    """150 float32 statistics that change slowly with the layer and the step, as gradient norms do."""
    return (np.exp(-np.arange(150) / 40.0) * (1.0 + 0.3 * np.sin(step / 50.0 + np.arange(150)))).astype(np.float32)


def test_whole_chunks_are_compressed_once_and_the_rest_waits_in_the_tail(tmp_path):
    """Version 3 layout: a [layer] column is chunked by 8 layers and R rows; complete chunks are shuffled +
    deflated + checksummed, the rows of the unfinished chunk are in tail/<column> while the file is written."""
    path = tmp_path / "run.h5"
    quantities = {"g": {"norm": Quantity((150,), ("layer",), dtype="float32")}}
    recorder = Recorder(path, meta={}, flush_every=10)
    recorder.start(WIDE, quantities)
    for step in range(1000):
        recorder.record("g", step, {"norm": wide_norm(step)})
    recorder.flush()
    with h5py.File(path, "r", swmr=True) as f:  # the writer is live
        norm = f["probes/g/norm"]
        rows = norm.chunks[0]
        assert norm.chunks == (436, 8) and norm.compression == "gzip" and norm.shuffle and norm.fletcher32
        assert norm.shape[0] == rows * (1000 // rows) == 872  # whole chunks only ...
        tail = f["probes/g/tail/norm"]
        assert tail.shape == (rows, 150) and tail.compression is None and tail.fletcher32
        expected = np.stack([wide_norm(s) for s in range(1000)])
        np.testing.assert_array_equal(norm[:], expected[:872])
        np.testing.assert_array_equal(tail[: 1000 - 872], expected[872:])  # ... the rest in the tail
        assert {norm.id.get_chunk_info(i).filter_mask for i in range(norm.id.get_num_chunks())} == {0}
    assert load(path).array("g", "norm")[1].tobytes() == expected.tobytes()
    recorder.close()
    with h5py.File(path, "r") as f:  # closed: the column holds every row; what any HDF5 tool reads
        np.testing.assert_array_equal(f["probes/g/norm"][:], expected)
        assert f["probes/g/n_rows"][()] == 1000
    stored = sum(
        info.size
        for info in (lambda d: [d.id.get_chunk_info(i) for i in range(d.id.get_num_chunks())])(
            h5py.File(path, "r")["probes/g/norm"]
        )
    )
    assert stored < 0.8 * expected.nbytes  # statistics that change smoothly compress (random bits would not)


def test_the_summary_blocks_are_written_as_the_run_records(tmp_path):
    """Blocks of 128, 512, 2048 records: min / max / mean / last of every [layer] and [] quantity, written when
    complete (whole chunks of 32 blocks while the file is written, every complete block once it is closed),
    float32 ones at display precision."""
    from gradlens.loader import summarise

    path = tmp_path / "run.h5"
    quantities = {
        "g": {
            "norm": Quantity((3,), ("layer",), dtype="float32"),
            "count": Quantity((3,), ("layer",), dtype="int32"),
            "hist": Quantity((3, 2), ("layer", "bin"), dtype="int32"),
        }
    }
    rng = np.random.default_rng(0)
    norms = rng.lognormal(size=(4200, 3)).astype(np.float32)
    norms[40, 1], norms[700, 2] = np.nan, np.inf
    counts = rng.integers(-1, 3, (4200, 3)).astype(np.int32)
    recorder = Recorder(path, meta={}, flush_every=50)
    recorder.start(LAYERS + [dict(LAYERS[0], name="fc3")], quantities)
    for step in range(4200):
        recorder.record("g", 3 * step, {"norm": norms[step], "count": counts[step], "hist": np.zeros((3, 2))})
    recorder.flush()

    def blocks(f, size):
        group = f[f"probes/g/summary/{size}"]
        n = group["n_rows"][()]
        return n, group["step"][:n], group["last_step"][:n], group["norm"][:n], group["count"][:n]

    with h5py.File(path, "r", swmr=True) as f:
        assert "hist" not in f["probes/g/summary/128"]  # [layer, bin]: read by range, not summarised
        assert list(f["probes/g/summary"].attrs["stats"]) == ["min", "max", "mean", "last"]
        assert list(f["probes/g/summary"].attrs["blocks"]) == [128 * 4**k for k in range(7)]  # no 32: made on reading
        assert [blocks(f, size)[0] for size in (128, 512)] == [32, 0]  # whole chunks of 32 blocks
    recorder.close()
    steps = 3 * np.arange(4200)
    with h5py.File(path, "r") as f:  # compacted at close: levels up to the run's length
        assert sorted(f["probes/g/summary"], key=int) == ["128", "512", "2048"]
        for size in (128, 512, 2048):
            n, first, last, norm, count = blocks(f, size)
            assert n == 4200 // size
            reference = summarise(steps, norms, 0, size)
            np.testing.assert_array_equal(first, reference.first_step[:n])
            np.testing.assert_array_equal(last, reference.last_step[:n])
            exact = summarise_exact(steps, norms, size)
            for k, stat in enumerate(("min", "max", "mean", "last")):
                np.testing.assert_array_equal(norm[..., k], getattr(reference, stat)[:n].astype(np.float32))
                np.testing.assert_array_equal(norm[..., k], display_precision(exact[stat][:n]))
                finite = np.isfinite(exact[stat][:n]) & (exact[stat][:n] != 0)
                error = np.abs(norm[..., k][finite] / exact[stat][:n][finite].astype(np.float64) - 1)
                assert error.max() <= 2**-8, stat  # rounded, within 0.39 %
            assert norm.dtype == np.float32 and count.dtype == np.float64  # int32 counts: exact in float64
            np.testing.assert_array_equal(count[..., 0], summarise(steps, counts, 0, size).min[:n])
        assert np.isnan(f["probes/g/summary/128/norm"][0, 1, 2])  # the block holding the NaN has a NaN mean


def summarise_exact(steps, values, block):
    """min / max / mean / last per block of ``block`` records, exact float32 (no display rounding)."""
    n = len(steps) // block
    blocks = values[: n * block].reshape(n, block, -1).astype(np.float64)
    with np.errstate(invalid="ignore"):
        return {
            "min": np.fmin.reduce(blocks, axis=1).astype(np.float32),
            "max": np.fmax.reduce(blocks, axis=1).astype(np.float32),
            "mean": blocks.mean(axis=1).astype(np.float32),
            "last": blocks[:, -1].astype(np.float32),
        }


def test_display_precision_rounds_to_8_significant_bits_and_keeps_order_and_non_finite_values():
    values = np.random.default_rng(1).lognormal(0.0, 20.0, 100_000).astype(np.float32)
    rounded = display_precision(values)
    normal = values > np.finfo(np.float32).tiny
    error = np.abs(rounded[normal] / values[normal].astype(np.float64) - 1)
    assert rounded.dtype == np.float32 and 2**-8 * 0.99 < error.max() <= 2**-8
    assert np.all(rounded.view(np.uint32) & 0xFFFF == 0)  # the two low bytes: zero
    assert np.all(np.diff(display_precision(np.sort(values))) >= 0)  # order kept
    special = np.array([1 + 2**-8, 1 + 3 * 2**-8, np.nan, -np.inf, np.finfo(np.float32).max, -2.5, 0.0], np.float32)
    np.testing.assert_array_equal(  # ties to even; non-finite and the largest float32 as they were
        display_precision(special), [1.0, 1 + 4 * 2**-8, np.nan, -np.inf, np.finfo(np.float32).max, -2.5, 0.0]
    )


def test_a_small_run_is_compacted_at_close_with_the_same_records(tmp_path, monkeypatch):
    """The tails of a closed file are dead space (SWMR never frees it): a run where they are >= 0.5 % of the file
    is rewritten at close with no tails, one layer per chunk at deflate 6, and exactly the same records; a
    compaction that fails leaves the closed file whole, with a warning."""
    import warnings

    from gradlens.recorder import compact as compacting

    quantities = {"g": {"norm": Quantity((150,), ("layer",), dtype="float32")}}
    expected = np.stack([wide_norm(s) for s in range(1000)])
    for fail in (False, True):
        path = tmp_path / f"run-{fail}.h5"
        recorder = Recorder(path, meta={"config": {"fail": fail}}, flush_every=10)
        recorder.start(WIDE, quantities)
        for step in range(1000):
            recorder.record("g", step, {"norm": wide_norm(step)})
            recorder.log_scalars(step, loss=1.0 / (step + 1))
        recorder.flush()
        live = load(path)
        live_summary = live.summary("g", "norm", points=3)
        if fail:
            def refuse(*args):
                raise OSError("disk full")

            monkeypatch.setattr(compacting.os, "replace", refuse)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            recorder.close()
        run = load(path)
        assert run.status == "finished" and run.meta["config"] == {"fail": fail}
        np.testing.assert_array_equal(run.array("g", "norm")[1], expected)
        assert run.scalar("loss")[1].tolist() == [1.0 / (s + 1) for s in range(1000)]
        summary = run.summary("g", "norm", points=3)
        for field in ("first_step", "count", "min", "max", "mean", "last"):
            np.testing.assert_array_equal(getattr(summary, field), getattr(live_summary, field), err_msg=field)
        with h5py.File(path, "r") as f:
            norm = f["probes/g/norm"]
            if fail:
                assert "tail" in f["probes/g"] and norm.chunks == (436, 8)
                assert [str(w.message) for w in caught] == [f"{path} is complete but was not compacted (disk full)"]
            else:
                assert "tail" not in f["probes/g"] and "tail" not in f["scalars"] and not caught
                assert norm.chunks == (4096, 1) and norm.compression_opts == 6 and norm.fletcher32
        assert not path.with_name(path.name + ".compact-tmp").exists()
    assert (tmp_path / "run-False.h5").stat().st_size < 0.8 * (tmp_path / "run-True.h5").stat().st_size
    before = (tmp_path / "run-False.h5").read_bytes()
    assert not compacting.compact(tmp_path / "run-False.h5")  # nothing dead left: left as it is
    assert (tmp_path / "run-False.h5").read_bytes() == before


def test_nothing_in_memory_grows_with_the_number_of_steps(tmp_path):
    """Python and numpy memory held while recording (tracemalloc) is the same after 2 000 and 12 000 more steps:
    the unfinished chunks and summary blocks are fixed in size (HDF5's own caches are bounded by HDF5)."""
    import gc
    import tracemalloc

    layers = WIDE[:40]
    quantities = {"g": {q: Quantity((40,), ("layer",), dtype="float32") for q in ("a", "b")}}
    row = {"a": np.ones(40, np.float32), "b": np.ones(40, np.float32)}
    tracemalloc.start()
    try:
        with Recorder(tmp_path / "run.h5", meta={}, flush_every=64) as recorder:
            recorder.start(layers, quantities)
            held = []
            for chunk in range(3):
                for step in range(chunk * 6000, (chunk + 1) * 6000):
                    recorder.record("g", step, row)
                    recorder.log_scalars(step, loss=1.0)
                recorder.flush()
                gc.collect()
                held.append(tracemalloc.get_traced_memory()[0])
    finally:
        tracemalloc.stop()
    assert held[2] - held[1] < 64 * 1024, held  # after the levels filled once, nothing more is kept


def test_a_value_that_does_not_fit_its_dtype_is_stored_at_the_bound_with_a_warning_event(tmp_path):
    path = tmp_path / "run.h5"
    quantities = {"g": {"norm": Quantity((2,), ("layer",), dtype="float32"), "n": Quantity((), (), dtype="int32")}}
    with Recorder(path, meta={}) as recorder:
        recorder.start(LAYERS, quantities)
        recorder.record("g", 0, {"norm": np.array([1e39, -1e39]), "n": np.int64(2**40)})
        recorder.record("g", 1, {"norm": np.array([1e40, 2.0]), "n": np.int64(3)})
    run = load(path)
    np.testing.assert_array_equal(run.array("g", "norm")[1], [[np.inf, -np.inf], [np.inf, 2.0]])
    assert run.array("g", "n")[1].tolist() == [2**31 - 1, 3]
    events = run.events()
    assert events["kind"].tolist() == ["warning", "warning"] and set(events["source"]) == {"recorder"}
    assert "g/norm: 1e+39 is beyond float32's range; stored as ±inf" in events["message"][0]
    assert "g/n: 1099511627776 does not fit int32" in events["message"][1]


def test_resuming_a_version_2_file_keeps_its_float64_statistics(tmp_path):
    from pathlib import Path

    path = tmp_path / "run.h5"
    path.write_bytes((Path(__file__).parent / "data" / "v2_run.h5").read_bytes())
    expected = np.load(Path(__file__).parent / "data" / "v2_run_expected.npz")
    old = load(path)
    quantities = {probe: old.quantities(probe) for probe in old.probes}
    today = {"mean": "float32", "mean_abs": "float32", "norm": "float32", "max_abs": "float32", "nonfinite": "int32"}
    quantities["grad_stats"] = {  # what GradStats declares today
        name: dataclasses.replace(q, dtype=today.get(name, q.dtype)) for name, q in quantities["grad_stats"].items()
    }
    layers = [dict(row) for row in old.layers.to_dict("records")]
    with Recorder(path, meta={}, mode="resume", resume_step=7) as recorder:
        recorder.start(layers, quantities)
        values = {name: np.full(q.shape, 0.5, q.dtype) for name, q in quantities["grad_stats"].items()}
        recorder.record("grad_stats", 8, values)
    run = load(path)
    steps, norm, _, _ = run.array("grad_stats", "norm")
    assert run.schema_version == SCHEMA_VERSION and steps.tolist() == list(range(9)) and norm.dtype == np.float64
    np.testing.assert_array_equal(norm[:8], expected["grad_stats/norm/values"][:8])
    assert norm[8].tolist() == [0.5] * 4
    assert run.summary("grad_stats", "norm", points=1).max.tolist() == [norm.max(axis=0).tolist()]


RACER = r"""
import sys, time
import numpy as np
from gradlens.recorder import Recorder
from gradlens.schema import Quantity

path, steps = sys.argv[1], int(sys.argv[2])
layers = [{"name": f"l{i}", "kind": "Linear", "shape": [1, 1], "params": 1} for i in range(20)]
quantities = {"g": {"wide": Quantity((600,), ("x",)), "norm": Quantity((20,), ("layer",), dtype="float32")}}
with Recorder(path, meta={}, flush_every=3, flush_seconds=3600) as recorder:
    recorder.start(layers, quantities)
    for step in range(steps):
        norm = (np.arange(20) + step).astype(np.float32)
        recorder.record("g", step, {"wide": np.full(600, float(step)), "norm": norm})
        time.sleep(0.002)  # a run of >= 6 s, so that readers race it however busy the machine is
"""


def test_readers_racing_a_live_writer_always_read_committed_exact_rows(tmp_path):
    """A writer commits every 3 records; chunks of the 600-wide column hold 54 rows, so its tail is overwritten
    every 18 commits. A reader reading all the while only ever gets a prefix of exact rows and summaries."""
    from gradlens.loader import summarise

    path = tmp_path / "run.h5"
    writer = subprocess.Popen([sys.executable, "-c", RACER, str(path), "3000"], stderr=subprocess.PIPE, text=True)
    reads, deadline = 0, time.monotonic() + 120
    try:
        while writer.poll() is None and time.monotonic() < deadline:
            if not path.exists():
                time.sleep(0.01)
                continue
            run = load(path)
            steps, wide, _, _ = run.array("g", "wide")
            np.testing.assert_array_equal(steps, np.arange(len(steps)))
            np.testing.assert_array_equal(wide, np.repeat(steps[:, None].astype(float), 600, axis=1))
            steps, norm, _, _ = run.array("g", "norm", stop=len(steps))
            summary = run.summary("g", "norm", points=3, stop=len(steps))
            expected = summarise(steps, norm, 0, summary.block)
            np.testing.assert_array_equal(summary.max, expected.max)
            np.testing.assert_array_equal(summary.last, expected.last)
            reads += 1
        assert writer.wait(timeout=120) == 0, writer.stderr.read()
    finally:
        writer.kill()
        writer.stderr.close()
    assert reads >= 3 and load(path).n_records("g") == 3000
