"""One logged scalar is read from its own table (schema 5, ``/scalars/by_name/<k>``): a read costs what it returns,
not the whole long-format ``/scalars`` table; older files, and names logged after the slots ran out, are found by
scanning that table, with the same values."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from gradlens.loader import load
from gradlens.loader.rows import TableReader
from gradlens.recorder import Recorder, layout
from gradlens.schema import BY_NAME, SCALAR_SLOTS

LAYERS = [{"name": "fc", "kind": "Linear", "shape": [2, 2], "params": 6}]
STEPS = 9000  # 2 whole chunks of a slot (4096 rows) and a part chunk in its tail


def logged(step: int) -> dict[str, float]:
    """What the run logs at ``step``: loss every step, accuracy every 7th, lr every 100th."""
    values = {"loss": 1.0 / (step + 1.0)}
    if step % 7 == 0:
        values["accuracy"] = step / STEPS
    if step % 100 == 0:
        values["lr"] = 0.1 * 0.5 ** (step // 1000)
    return values


def expected(name: str, start: int = 0, stop: int = STEPS) -> tuple[np.ndarray, np.ndarray]:
    steps = [s for s in range(start, stop) if name in logged(s)]
    return np.array(steps, dtype=np.int64), np.array([logged(s)[name] for s in steps])


def record(path, steps=STEPS, names_past: int = 0, close: bool = True) -> Recorder:
    """A run logging ``logged(step)`` (and ``names_past`` more names once, at step 5) without probes."""
    recorder = Recorder(path, meta={}, flush_every=500)
    recorder.start(LAYERS, {})
    for step in range(steps):
        recorder.log_scalars(step, **logged(step))
        if step == 5:
            recorder.log_scalars(step, **{f"extra{k}": float(k) for k in range(names_past)})
    if close:
        recorder.close()
    else:
        recorder.flush()
    return recorder


@pytest.fixture
def reads(monkeypatch):
    """The (table, column) pairs read through TableReader during a test."""
    seen: list[tuple[str, str]] = []
    read = TableReader.read

    def spy(self, name, *args, **kwargs):
        seen.append((self.group.name, name))
        return read(self, name, *args, **kwargs)

    monkeypatch.setattr(TableReader, "read", spy)
    return seen


def check_reads(run, reads) -> None:
    """Every way of reading one scalar gives the brute-force values and never reads the long-format table."""
    for name in ("loss", "accuracy", "lr"):
        reads.clear()
        assert run.n_scalar_records(name) == len(expected(name)[0])
        steps, values = run.scalar(name)
        np.testing.assert_array_equal(steps, expected(name)[0])
        np.testing.assert_array_equal(values, expected(name)[1])
        steps, values = run.scalar(name, start=4321, stop=8765, stride=3)
        want_steps, want_values = expected(name, 4321, 8765)
        np.testing.assert_array_equal(steps, want_steps[::3])
        np.testing.assert_array_equal(values, want_values[::3])
        summary = run.scalar_summary(name, points=20, start=1000)
        want_steps, want_values = expected(name, 1000)
        assert summary.count.sum() == len(want_steps) and summary.first_step[0] == want_steps[0]
        assert summary.last[-1] == want_values[-1] and summary.max.max() == want_values.max()
        assert not [read for read in reads if read[0] == "/scalars"], reads


def test_one_scalar_is_read_from_its_own_table_closed_and_live(tmp_path, reads):
    path = tmp_path / "run.h5"
    writer = record(path, close=False)  # flushed, still open: the last rows of each slot are in its tail
    try:
        with h5py.File(path, "r", swmr=True) as file:
            assert file.attrs["schema_version"] == 5 and len(file[BY_NAME]) == SCALAR_SLOTS
            assert file[f"{BY_NAME}/0/n_rows"][()] == STEPS and file[f"{BY_NAME}/0/step"].shape[0] == 8192
        run = load(path)
        assert run.status == "running"
        check_reads(run, reads)
    finally:
        writer.close()


def test_a_compacted_run_keeps_one_table_per_name(tmp_path, reads):
    path = tmp_path / "run.h5"
    record(path)
    with h5py.File(path, "r") as file:
        assert sorted(file[BY_NAME]) == ["0", "1", "2"]  # compacted at close: only the names logged
        assert file[f"{BY_NAME}/1/n_rows"][()] == len(expected("accuracy")[0])
    check_reads(load(path), reads)


def test_names_past_the_slots_and_files_without_slots_are_found_by_scanning(tmp_path, monkeypatch, reads):
    monkeypatch.setattr(layout, "SCALAR_SLOTS", 2)
    path = tmp_path / "run.h5"
    record(path, steps=300, names_past=3)
    run = load(path)
    assert run.scalar_names() == ["loss", "accuracy", "lr", "extra0", "extra1", "extra2"]
    for name in ("loss", "accuracy", "lr"):
        np.testing.assert_array_equal(run.scalar(name)[1], expected(name, 0, 300)[1])
    assert run.scalar("extra2")[1].tolist() == [2.0]
    reads.clear()
    run.scalar("accuracy")
    assert ("/scalars", "name") not in reads
    run.scalar("lr")
    assert ("/scalars", "name") in reads  # the third name has no slot: the long-format table is scanned

    with h5py.File(path, "r+") as file:  # the same run as a version 4 file
        del file[BY_NAME]
        file.attrs["schema_version"] = 4
    old = load(path)
    for name in ("loss", "accuracy", "lr"):
        np.testing.assert_array_equal(old.scalar(name, start=50)[1], expected(name, 50, 300)[1])
        assert old.n_scalar_records(name) == run.n_scalar_records(name) == len(expected(name, 0, 300)[0])
        np.testing.assert_array_equal(old.scalar_summary(name, points=3).last, run.scalar_summary(name, points=3).last)
    with pytest.raises(KeyError, match="no scalar 'nope'; logged scalars: \\['loss', 'accuracy', 'lr', 'extra0'"):
        old.scalar("nope")
    with pytest.raises(KeyError, match="no scalar 'nope'; logged scalars: \\['loss', 'accuracy', 'lr', 'extra0'"):
        run.scalar("nope")


def test_a_resumed_run_keeps_each_names_records_in_its_table(tmp_path, reads):
    path = tmp_path / "run.h5"
    record(path, steps=3000)
    recorder = Recorder(path, meta={}, mode="resume", resume_step=1999, flush_every=500)
    recorder.start(LAYERS, {})
    for step in range(2000, STEPS):
        recorder.log_scalars(step, **logged(step))
    recorder.close()
    check_reads(load(path), reads)
