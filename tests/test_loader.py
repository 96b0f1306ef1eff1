"""The loader: tidy frames with exact values, and one clear error for each file that is not a gradlens run."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from gradlens.loader import load
from gradlens.probes.base import Quantity
from gradlens.recorder import Recorder

LAYERS = [
    {"name": "stem", "kind": "Conv2d", "shape": [8, 3, 3, 3], "params": 224},
    {"name": "head.fc", "kind": "Linear", "shape": [10, 8], "params": 90},
]
QUANTITIES = {
    "grad": {
        "mean_abs": Quantity((2,), ("layer",)),
        "loss_probe": Quantity((), ()),
        "hist": Quantity((2, 4), ("layer", "bin")),
    },
    "batch": {"per_sample": Quantity((3,), ("sample",), labels={"sample": ["s0", "s1", "s2"]})},
}
STEPS = [0, 1, 3, 7]


def mean_abs(step: int) -> np.ndarray:
    return np.array([10.0 ** -(step + 3), 1.0 / (step + 3)])


@pytest.fixture
def run_path(tmp_path):
    path = tmp_path / "run.h5"
    with Recorder(path, meta={"config": {"seed": 3}}, flush_every=2) as recorder:
        recorder.start(LAYERS, QUANTITIES)
        for step in STEPS:
            hist = np.arange(8.0).reshape(2, 4) * step
            recorder.record("grad", step, {"mean_abs": mean_abs(step), "loss_probe": step / 7, "hist": hist})
            recorder.log_scalars(step, loss=2.0 - step / 10, accuracy=step / 10)
        recorder.record("batch", 7, {"per_sample": np.array([0.5, -1.0, np.inf])})
    return path


def test_frame_is_tidy_with_exact_values_in_forward_layer_order(run_path):
    run = load(run_path)
    frame = run.frame("grad")
    assert list(frame.columns) == ["step", "layer", "quantity", "value"]
    expected = pd.DataFrame(
        [(s, layer, "mean_abs", mean_abs(s)[i]) for s in STEPS for i, layer in enumerate(["stem", "head.fc"])]
        + [(s, "", "loss_probe", s / 7) for s in STEPS],
        columns=["step", "layer", "quantity", "value"],
    )
    pd.testing.assert_frame_equal(frame, expected, check_exact=True)  # the (layer, bin) histogram is not tidy
    assert frame["step"].dtype == np.int64
    assert run.frame("batch").empty and list(run.frame("batch").columns) == list(frame.columns)


def test_array_gives_any_quantity_with_axes_and_labels(run_path):
    run = load(run_path)
    steps, values, axes, labels = run.array("grad", "hist")
    assert steps.tolist() == STEPS and axes == ("step", "layer", "bin")
    np.testing.assert_array_equal(values, np.stack([np.arange(8.0).reshape(2, 4) * s for s in STEPS]))
    assert labels == {"layer": ["stem", "head.fc"]}
    steps, values, axes, labels = run.array("batch", "per_sample")
    assert steps.tolist() == [7] and axes == ("step", "sample") and labels == {"sample": ["s0", "s1", "s2"]}
    np.testing.assert_array_equal(values, [[0.5, -1.0, np.inf]])
    with pytest.raises(KeyError, match="no probe 'nope'; recorded probes: \\['grad', 'batch'\\]"):
        run.frame("nope")
    with pytest.raises(KeyError, match="has no quantity 'nope'"):
        run.array("grad", "nope")


def test_meta_layers_scalars_and_status(run_path):
    run = load(run_path)
    assert run.path == str(run_path) and run.probes == ["grad", "batch"] and run.status == "finished"
    assert run.meta["config"] == {"seed": 3} and run.meta["resumed"] == []
    assert run.meta["versions"]["h5py"] == h5py.version.version
    assert run.layers.to_dict("list") == {
        "name": ["stem", "head.fc"],
        "kind": ["Conv2d", "Linear"],
        "shape": [(8, 3, 3, 3), (10, 8)],
        "params": [224, 90],
    }
    assert run.quantities("batch") == QUANTITIES["batch"]
    scalars = run.scalars()
    assert list(scalars.columns) == ["step", "name", "value"]
    assert scalars.query("name == 'loss'")["value"].tolist() == [2.0 - s / 10 for s in STEPS]
    assert scalars.query("name == 'accuracy'")["step"].tolist() == STEPS


def load_error(path, error: type[Exception], match: str) -> None:
    """``load(path)`` raises ``error`` with a one-line message that matches ``match``."""
    with pytest.raises(error, match=match) as raised:
        load(path)
    assert "\n" not in str(raised.value)


def test_missing_foreign_and_damaged_files_give_one_clear_error(tmp_path, run_path):
    load_error(
        tmp_path / "absent.h5", FileNotFoundError, r"absent\.h5: no such file; expected a gradlens run"
    )
    text = tmp_path / "notes.h5"
    text.write_text("not hdf5")
    load_error(text, ValueError, r"notes\.h5 is not an HDF5 file")
    load_error(tmp_path, ValueError, "is a directory")
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = np.arange(3)
    load_error(foreign, ValueError, r"foreign\.h5 is an HDF5 file but not a gradlens run .*format=None")
    newer = tmp_path / "newer.h5"
    shutil.copyfile(run_path, newer)
    with h5py.File(newer, "r+") as f:
        f.attrs["schema_version"] = 99
    load_error(newer, ValueError, "schema version 99, newer .* upgrade gradlens")
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(run_path.read_bytes()[: run_path.stat().st_size * 2 // 3])
    load_error(truncated, ValueError, r"truncated\.h5 is truncated")


def test_a_truncated_copy_of_a_running_file_is_detected(tmp_path):
    path = tmp_path / "live.h5"
    recorder = Recorder(path, meta={}, flush_every=10_000)
    recorder.start(LAYERS[:1], {"grad": {"big": Quantity((512,), ("x",))}})
    for step in range(300):  # 300 x 4 KiB: 19 chunks of 64 KiB
        recorder.record("grad", step, {"big": np.full(512, float(step))})
    recorder.flush()
    data = path.read_bytes()
    recorder.close()
    copy = tmp_path / "copy.h5"
    copy.write_bytes(data)  # a byte copy of a running file reads fine ...
    assert load(copy).status == "running" and load(copy).array("grad", "big")[1][-1, 0] == 299.0
    copy.write_bytes(data[: len(data) // 2])  # ... but not once half of it is gone
    with pytest.raises(
        ValueError, match=rf"copy\.h5 is truncated \({len(data) // 2} bytes, the file records {len(data)}\)"
    ) as raised:
        load(copy).array("grad", "big")
    assert "\n" not in str(raised.value)


# -- the read API: ranges, strides, layers, summaries (issue 23.3) --------------------------------------------

LONG_LAYERS = [{"name": f"l{i}", "kind": "Linear", "shape": [2, 2], "params": 6} for i in range(3)]
LONG_STEPS = np.arange(0, 2 * 300, 2)  # 300 records, one every 2 steps


def long_norm(step: int) -> np.ndarray:
    step = int(step)
    values = np.array([np.sin(step / 9.0), 10.0 ** -(step % 7), step / 3.0])
    if step == 100:
        values[0] = np.nan  # a NaN record: every block holding it has a NaN mean
    if step == 202:
        values[2] = np.inf
    return values


@pytest.fixture(scope="module")
def long_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("long") / "run.h5"
    quantities = {
        "g": {
            "norm": Quantity((3,), ("layer",)),
            "count": Quantity((3,), ("layer",), dtype="int32"),
            "total": Quantity((), ()),
        }
    }
    with Recorder(path, meta={}, flush_every=7) as recorder:
        recorder.start(LONG_LAYERS, quantities)
        for k, step in enumerate(LONG_STEPS.tolist()):
            recorder.record("g", step, {"norm": long_norm(step), "count": np.array([k % 5, 0, k]), "total": k / 2})
            recorder.log_scalars(step, loss=1.0 / (k + 1.0))
            if k % 3 == 0:
                recorder.log_scalars(step, accuracy=k / 300)
    return load(path)


def brute_summary(steps, values, first_record, block):
    """Blocks by record index, one record at a time: the definition of Run.summary's arrays."""
    blocks: dict[int, list[int]] = {}
    for i in range(len(steps)):
        blocks.setdefault((first_record + i) // block, []).append(i)
    rows = list(blocks.values())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # nanmin/nanmax of an all-NaN block: NaN, as intended
        return {
            "first_step": [steps[r[0]] for r in rows],
            "last_step": [steps[r[-1]] for r in rows],
            "count": [len(r) for r in rows],
            "min": np.array([np.nanmin(values[r], axis=0) for r in rows]),
            "max": np.array([np.nanmax(values[r], axis=0) for r in rows]),
            "mean": np.array([np.sum(values[r].astype(np.float64), axis=0) / len(r) for r in rows]),
            "last": np.array([values[r[-1]] for r in rows]),
        }


def test_array_reads_a_step_range_a_stride_and_chosen_layers(long_run):
    run = long_run
    assert run.n_records("g") == 300 and run.span("g") == (0, 598)
    steps, values, axes, labels = run.array("g", "norm", start=101, stop=121)
    assert steps.tolist() == list(range(102, 121, 2)) and axes == ("step", "layer")
    np.testing.assert_array_equal(values, np.stack([long_norm(s) for s in steps]))
    steps, values, _, labels = run.array("g", "norm", start=10, stride=7, layers=["l2", 0])
    assert steps.tolist() == LONG_STEPS[5::7].tolist() and labels["layer"] == ["l2", "l0"]
    np.testing.assert_array_equal(values, np.stack([long_norm(s)[[2, 0]] for s in steps]))
    assert run.steps("g", stop=7).tolist() == [0, 2, 4, 6] and run.steps("g", 590, stride=2).tolist() == [590, 594, 598]
    assert run.array("g", "norm", start=1000)[1].shape == (0, 3)
    frame = run.frame("g", start=4, stop=8, layers=["l1"])
    assert frame.values.tolist() == [
        [4, "l1", "norm", long_norm(4)[1]],
        [6, "l1", "norm", long_norm(6)[1]],
        [4, "l1", "count", 0.0],
        [6, "l1", "count", 0.0],
        [4, "", "total", 1.0],
        [6, "", "total", 1.5],
    ]
    with pytest.raises(KeyError, match="no layer 'nope'"):
        run.array("g", "norm", layers=["nope"])
    with pytest.raises(ValueError, match="stride must be >= 1"):
        run.array("g", "norm", stride=0)
    with pytest.raises(ValueError, match="selects along a 'layer' axis"):
        run.array("g", "total", layers=[0])


@pytest.mark.parametrize(
    "quantity, points, start, stop, block",
    [("norm", 4, None, None, 32), ("norm", 2, None, None, 128), ("norm", 2000, None, None, 1),
     ("norm", 3, 77, 401, 32), ("count", 3, 77, 401, 32), ("total", 9, 5, None, 32)],
)
def test_summary_is_min_max_mean_last_per_block_of_records(long_run, quantity, points, start, stop, block):
    summary = long_run.summary("g", quantity, points=points, start=start, stop=stop)
    steps, values, _, _ = long_run.array("g", quantity, start=start, stop=stop)
    first = int(np.searchsorted(LONG_STEPS, start or 0))
    expected = brute_summary(steps, values, first, block)
    assert summary.block == block and len(summary.count) >= min(points, len(steps))
    for field in ("first_step", "last_step", "count"):
        assert getattr(summary, field).tolist() == expected[field], field
    for field in ("min", "max", "last"):
        np.testing.assert_array_equal(getattr(summary, field), expected[field], err_msg=field)
        assert getattr(summary, field).dtype == values.dtype
    np.testing.assert_allclose(summary.mean, expected["mean"], rtol=1e-12)  # NaN/Inf in the same places


def test_summary_of_layers_and_of_scalars(long_run):
    run = long_run
    summary = run.summary("g", "norm", points=4, layers=["l2"])
    np.testing.assert_array_equal(summary.max, run.summary("g", "norm", points=4).max[:, [2]])
    assert run.scalar_names() == ["loss", "accuracy"]
    steps, values = run.scalar("loss", start=11, stop=31, stride=3)
    assert steps.tolist() == [12, 18, 24, 30] and values.tolist() == [1 / 7, 1 / 10, 1 / 13, 1 / 16]
    steps, values = run.scalar("accuracy")
    assert steps.tolist() == LONG_STEPS[::3].tolist()
    summary = run.scalar_summary("accuracy", points=2)
    expected = brute_summary(steps, values, 0, 32)
    assert summary.block == 32 and summary.count.tolist() == expected["count"] == [32, 32, 32, 4]
    np.testing.assert_array_equal(summary.last, expected["last"])
    np.testing.assert_allclose(summary.mean, expected["mean"], rtol=1e-12)
    with pytest.raises(KeyError, match="no scalar 'nope'; logged scalars: \\['loss', 'accuracy'\\]"):
        run.scalar("nope")
    with pytest.raises(ValueError, match="points must be >= 1"):
        run.summary("g", "norm", points=0)


# -- files of older schema versions ----------------------------------------------------------------------------

DATA = Path(__file__).resolve().parent / "data"


def test_a_version_2_file_made_by_the_old_recorder_loads_identically():
    """tests/data/v2_run.h5 was written by gradlens at schema version 2 (tests/data/make_v2_run.py), with what
    that version's loader returned saved beside it: today's loader returns the same arrays, dtypes included."""
    expected = np.load(DATA / "v2_run_expected.npz")
    run = load(DATA / "v2_run.h5")
    assert run.schema_version == 2 and run.probes == ["grad_stats", "update_ratio"] and run.status == "finished"
    for probe in run.probes:
        for quantity in run.quantities(probe):
            steps, values, _, _ = run.array(probe, quantity)
            np.testing.assert_array_equal(steps, expected[f"{probe}/{quantity}/steps"])
            np.testing.assert_array_equal(values, expected[f"{probe}/{quantity}/values"])
            assert values.dtype == expected[f"{probe}/{quantity}/values"].dtype, (probe, quantity)
    scalars = run.scalars()
    np.testing.assert_array_equal(scalars["step"], expected["scalars/step"])
    assert scalars["name"].tolist() == expected["scalars/name"].tolist()
    np.testing.assert_array_equal(scalars["value"], expected["scalars/value"])
    events = run.events()
    assert events.values.tolist() == [
        [int(expected["events/step"][0]), *(str(expected[f"events/{c}"][0]) for c in ("kind", "source", "message"))]
    ]
    # the new reads work on it too, computed from the records
    assert run.n_records("grad_stats") == 12 and run.span("update_ratio") == (0, 9)
    np.testing.assert_array_equal(
        run.array("grad_stats", "norm", start=3, stop=9, stride=2, layers=[1])[1],
        expected["grad_stats/norm/values"][3:9:2, [1]],
    )
    summary = run.summary("grad_stats", "max_abs", points=12)
    assert summary.block == 1 and summary.count.tolist() == [1] * 12
    np.testing.assert_array_equal(summary.max, expected["grad_stats/max_abs/values"])
    assert run.scalar_names() == ["loss", "lr"]


def assert_summary_equal(summary, expected, key: str, mean_rtol: float) -> None:
    """Every field of a Summary equals the saved one; the mean within ``mean_rtol`` (0: exactly). Blocks of
    more than one float32 record were saved at full precision (schema 3) and are now given at display precision
    (schema.display_precision): they equal the saved values rounded so (a mean within ``mean_rtol`` of the saved
    one may round to the neighbouring display value: 2**-7 apart)."""
    from gradlens.schema import display_precision

    display = summary.block > 1 and summary.min.dtype == np.float32
    for field in summary._fields:
        actual, wanted = getattr(summary, field), expected[f"{key}/{field}"]
        if display and field in ("min", "max", "mean", "last"):
            wanted = display_precision(wanted).astype(wanted.dtype)
        if field == "mean" and mean_rtol:
            np.testing.assert_allclose(actual, wanted, rtol=2**-7 if display else mean_rtol, err_msg=key)
        else:
            np.testing.assert_array_equal(actual, wanted, err_msg=f"{key}/{field}")


def assert_loads_as_saved(run, expected, prefix: str, mean_rtol: float = 0.0) -> None:
    """Every array, summary, scalar and event ``run`` returns equals what was saved under ``prefix``, dtypes
    included; summary means within ``mean_rtol`` (0: exactly)."""
    for probe in run.probes:
        for quantity, declared in run.quantities(probe).items():
            key = f"{prefix}/{probe}/{quantity}"
            steps, values, _, _ = run.array(probe, quantity)
            np.testing.assert_array_equal(steps, expected[f"{key}/steps"])
            np.testing.assert_array_equal(values, expected[f"{key}/values"])
            assert values.dtype == expected[f"{key}/values"].dtype, key
            if declared.axes in (("layer",), ()):
                for points in (1, 3, 30):
                    summary = run.summary(probe, quantity, points=points)
                    assert_summary_equal(summary, expected, f"{key}/summary{points}", mean_rtol)
    scalars = run.scalars()
    np.testing.assert_array_equal(scalars["step"], expected[f"{prefix}/scalars/step"])
    assert scalars["name"].tolist() == expected[f"{prefix}/scalars/name"].tolist()
    np.testing.assert_array_equal(scalars["value"], expected[f"{prefix}/scalars/value"])
    assert run.scalar_names() == ["loss", "lr"]
    for name in run.scalar_names():
        steps, values = run.scalar(name)
        np.testing.assert_array_equal(steps, expected[f"{prefix}/scalar/{name}/steps"])
        np.testing.assert_array_equal(values, expected[f"{prefix}/scalar/{name}/values"])
        summary = run.scalar_summary(name, points=3)
        assert_summary_equal(summary, expected, f"{prefix}/scalar/{name}/summary3", mean_rtol)
    events = run.events()
    assert len(events) == 1
    for column in events.columns:
        assert events[column].tolist() == expected[f"{prefix}/events/{column}"].tolist()


@pytest.mark.parametrize("name", ["v3_run", "v3_killed"])
def test_version_3_files_made_by_the_old_recorder_load_identically(name, tmp_path):
    """tests/data/v3_run.h5 (closed) and v3_killed.h5 (its writer SIGKILLed: rows in tails, status running) were
    written by gradlens at schema version 3 (tests/data/make_v3_run.py), with what that version's loader returned
    saved beside them: today's loader returns the same arrays, summaries, scalars and events."""
    expected = np.load(DATA / "v3_run_expected.npz")
    path = tmp_path / f"{name}.h5"
    shutil.copy(DATA / f"{name}.h5", path)
    run = load(path)
    assert run.schema_version == 3 and run.status == str(expected[f"{name}/status"])
    assert_loads_as_saved(run, expected, name)


def test_repairing_a_killed_version_3_file_keeps_every_record_and_summary(tmp_path):
    """``gradlens repair`` rewrites a killed version 3 writer's file in today's format: it reads the same (summary
    means of float32 values within float32 precision: the killed file's coarser blocks are made by the reader
    from stored float32 means of finer ones, the copy's by the writer from the records)."""
    from gradlens.recorder import repair

    expected = np.load(DATA / "v3_run_expected.npz")
    path = tmp_path / "v3_killed.h5"
    shutil.copy(DATA / "v3_killed.h5", path)
    assert repair(path, backup=False).repaired
    run = load(path)
    assert run.status == "interrupted"
    with h5py.File(path, "r") as file:  # closed: every HDF5 tool opens it
        assert file.attrs["format"] == "gradlens"
    assert_loads_as_saved(run, expected, "v3_killed", mean_rtol=2**-22)


def test_a_failing_read_of_a_file_being_written_is_tried_again_only_while_its_writer_lives(tmp_path, monkeypatch):
    """A live file can fail a read for a moment (HDF5 gives up on a metadata entry the writer is rewriting, a
    busy machine stalls the writer between recording the file's new end and growing to it): while a writer
    holds the file's lock, the read is tried again from a fresh open and returns exact rows; a file nobody
    writes fails at once (nothing in it will change)."""
    from gradlens.loader import RunFileError, rows

    path = tmp_path / "run.h5"
    recorder = Recorder(path, meta={}, flush_every=1)
    recorder.start(LAYERS, QUANTITIES)
    for step in STEPS:
        recorder.record("grad", step, {"mean_abs": mean_abs(step), "loss_probe": 0.5, "hist": np.zeros((2, 4))})
    original, failures = rows.TableReader._rows, []

    def flaky(self, dataset, wanted, select):
        if len(failures) < 3:
            failures.append(dataset.name)
            raise OSError("Can't synchronously read data (incorrect metadata checksum after all read attempts)")
        return original(self, dataset, wanted, select)

    monkeypatch.setattr(rows.TableReader, "_rows", flaky)
    run = load(path)
    steps, values, _, _ = run.array("grad", "mean_abs")
    assert len(failures) == 3 and steps.tolist() == STEPS
    np.testing.assert_array_equal(values, [mean_abs(step) for step in STEPS])
    recorder.close()
    failures.clear()
    with pytest.raises(RunFileError, match="metadata checksum"):
        run.array("grad", "mean_abs")
    assert len(failures) == 1


def test_a_run_with_no_records_yet_has_empty_summaries(tmp_path):
    """A live run's file appears at its first commit, before any record: its summary is empty, not an error (a
    reader racing the writer there used to get 'damaged (cannot reshape array of size 0 ...)')."""
    path = tmp_path / "run.h5"
    with Recorder(path, meta={}) as recorder:
        recorder.start(LAYERS, QUANTITIES)
        run = load(path)
        for points in (1, 3):
            summary = run.summary("grad", "mean_abs", points=points, stop=0)
            assert summary.block == 1 and summary.count.tolist() == [] and summary.max.shape == (0, 2)
        assert run.summary("grad", "loss_probe").mean.shape == (0,)


def test_the_one_call_into_libhdf5_outside_h5py_holds_h5pys_lock(tmp_path, monkeypatch):
    """HDF5 is built without thread safety and ctypes releases the GIL: the SWMR open's call to
    ``H5Pset_metadata_read_attempts`` (the one gradlens makes outside h5py) holds h5py's lock, so another thread's
    h5py call waits for it. Without the lock, ``watch``'s doctor thread opening the live file while the main thread
    read it crashed the process (SIGSEGV in HDF5)."""
    import threading

    from h5py._objects import phil

    from gradlens.loader import files

    library = files._hdf5_library()
    if library is None:
        pytest.skip("no libhdf5 with H5Pset_metadata_read_attempts found: SWMR files open through h5py alone")
    path = tmp_path / "live.h5"
    recorder = Recorder(path, meta={}, flush_every=1)
    recorder.start(LAYERS, QUANTITIES)
    recorder.log_scalars(0, loss=1.0)
    recorder.flush()
    free_elsewhere: list[bool] = []

    class Spy:
        def __getattr__(self, name):
            return getattr(library, name)

        def H5Pset_metadata_read_attempts(self, fapl, attempts):  # noqa: N802 (HDF5's name)
            def try_lock() -> None:
                got = phil.acquire(False)
                free_elsewhere.append(bool(got))
                if got:
                    phil.release()

            other = threading.Thread(target=try_lock)
            other.start()
            other.join()
            return library.H5Pset_metadata_read_attempts(fapl, attempts)

    monkeypatch.setattr(files, "_hdf5_library", lambda: Spy())
    try:
        assert load(path).scalar("loss")[1].tolist() == [1.0]
    finally:
        recorder.close()
    assert free_elsewhere and not any(free_elsewhere)  # every call ran while no other thread could enter h5py
