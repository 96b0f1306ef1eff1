"""The loader: tidy frames with exact values, and one clear error for each file that is not a gradlens run."""

from __future__ import annotations

import shutil

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
