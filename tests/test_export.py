"""gradlens export: TensorBoard event files read back with TensorBoard's own reader, and CSV / Parquet tables
read back with pandas, hold the file's values."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from synthetic_runs import LAYERS, STEPS, ProbeData, RunData, grad_probe, healthy_grads, healthy_scalars, write_run

import gradlens
from gradlens.cli import main
from gradlens.probes.base import Quantity

EDGES = np.linspace(-0.1, 0.1, 6)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    rng = np.random.default_rng(0)
    steps = STEPS[:6]
    grads = {q: v[:6] for q, v in healthy_grads().items()}
    hist = rng.integers(0, 50, (6, len(LAYERS), 5))
    hist[2, 1] = 0  # an empty histogram: nothing to write for that layer and step
    gradient = grad_probe(
        grads,
        layers=LAYERS,
        steps=steps,
        extra={
            "hist": (Quantity((len(LAYERS), 5), ("layer", "bin"), {"layer": LAYERS}, dtype="int64"), hist),
            "hist_edges": (Quantity((6,), ("edge",)), np.tile(EDGES, (6, 1))),
        },
    )
    cushion = ProbeData(
        "cushion",
        "LayerCushion",
        {
            "mu": Quantity((2, 9), ("layer", "sample"), {"layer": ["a", "b"]}),
            "final_mean": Quantity((), ()),
        },
        [0, 3],
        {"mu": rng.uniform(0.1, 1.0, (2, 2, 9)), "final_mean": np.array([0.5, 0.25])},
    )
    cushion.values["mu"][1, 0, 4] = np.nan  # non-finite samples are left out of the histogram
    scalars = [s for s in healthy_scalars() if s[0] < 6]
    path = tmp_path_factory.mktemp("export") / "run.h5"
    return gradlens.load(write_run(path, RunData([gradient, cushion], scalars)))


def accumulator(directory):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(directory), size_guidance={"scalars": 0, "histograms": 0, "tensors": 0})
    events.Reload()
    return events


def test_tensorboard_scalars_and_histograms_read_back(run, tmp_path, capsys):
    out = tmp_path / "tb"
    assert main(["export", run.path, "--tensorboard", str(out)]) == 0
    assert "tensorboard:" in capsys.readouterr().out
    events = accumulator(out)
    tags = events.Tags()
    # logged scalars under their own names
    logged = run.scalars()
    for name in ("loss",):
        read = events.Scalars(name)
        expected = logged[logged["name"] == name]
        assert [e.step for e in read] == expected["step"].tolist()
        np.testing.assert_allclose([e.value for e in read], expected["value"], rtol=1e-6)  # float32 on disk
    # per-layer statistics: PROBE/QUANTITY/LAYER
    steps, values, _, _ = run.array("grads_every_step", "mean_abs")
    for j, layer in enumerate(LAYERS):
        read = events.Scalars(f"grads_every_step/mean_abs/{layer}")
        assert [e.step for e in read] == steps.tolist()
        np.testing.assert_allclose([e.value for e in read], values[:, j], rtol=1e-6)
    np.testing.assert_allclose([e.value for e in events.Scalars("cushion/final_mean")], [0.5, 0.25])
    # recorded histograms: TensorBoard's buckets are the recorded bins (right edges) and counts
    steps, hist, _, _ = run.array("grads_every_step", "hist")
    read = events.Histograms(f"grads_every_step/hist/{LAYERS[1]}")
    assert [e.step for e in read] == [s for k, s in enumerate(steps.tolist()) if hist[k, 1].sum() > 0]
    for event in read:
        k = steps.tolist().index(event.step)
        value = event.histogram_value
        np.testing.assert_allclose(value.bucket_limit, EDGES[1:])
        np.testing.assert_array_equal(value.bucket, hist[k, 1])
        assert value.num == hist[k, 1].sum()
        nonempty = np.flatnonzero(hist[k, 1])
        assert (value.min, value.max) == pytest.approx((EDGES[nonempty[0]], EDGES[nonempty[-1] + 1]))
    # per-sample values: TensorBoard bins them; count, min, max and sum are exact
    steps, mu, _, _ = run.array("cushion", "mu")
    for event in events.Histograms("cushion/mu/a"):
        samples = mu[steps.tolist().index(event.step), 0]
        samples = samples[np.isfinite(samples)]
        value = event.histogram_value
        assert value.num == len(samples)
        assert (value.min, value.max, value.sum) == pytest.approx((samples.min(), samples.max(), samples.sum()))
    assert events.Histograms("cushion/mu/a")[1].histogram_value.num == 8  # one NaN sample left out
    assert "grads_every_step/hist_edges" not in tags["scalars"]


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_tables_read_back(run, tmp_path, fmt):
    out = tmp_path / fmt
    assert main(["export", run.path, f"--{fmt}", str(out)]) == 0
    read = pd.read_csv if fmt == "csv" else pd.read_parquet
    scalars = read(out / f"scalars.{fmt}")
    expected = run.scalars()
    assert scalars["name"].tolist() == expected["name"].tolist()
    np.testing.assert_array_equal(scalars["value"], expected["value"])
    tidy = read(out / f"grads_every_step.{fmt}")
    frame = run.frame("grads_every_step")
    assert tidy["layer"].tolist() == frame["layer"].tolist()
    np.testing.assert_array_equal(tidy["value"], frame["value"])
    hist = read(out / f"grads_every_step.hist.{fmt}")
    steps, values, _, _ = run.array("grads_every_step", "hist")
    assert list(hist.columns) == ["step", "layer", "bin", "value"]
    np.testing.assert_array_equal(hist["value"], values.reshape(-1))
    row = hist.iloc[5 * 7 + 3]  # step index 1, layer index 1, bin 3
    assert (row["step"], row["layer"], row["bin"], row["value"]) == (steps[1], LAYERS[1], 3, values[1, 1, 3])
    mu = read(out / f"cushion.mu.{fmt}")
    np.testing.assert_array_equal(mu["value"], run.array("cushion", "mu")[1].reshape(-1))
    assert (out / "meta.json").exists() and (out / f"layers.{fmt}").exists()


def test_export_needs_a_target(run, capsys):
    assert main(["export", run.path]) == 2
    assert "--tensorboard" in capsys.readouterr().err


def test_every_scalar_tag_reads_back_exactly_from_slabs_of_events(run, tmp_path, monkeypatch):
    """The events are written for many steps at once, in slabs: every tag's steps and float32 values equal
    gradlens.load's, whatever the slab size (here 3 records per slab)."""
    import gradlens.export.tensorboard as tensorboard

    monkeypatch.setattr(tensorboard, "SLAB_VALUES", 3 * len(LAYERS))
    counts = tensorboard.export_tensorboard(run, tmp_path / "tb")
    events = accumulator(tmp_path / "tb")
    expected = {}
    for probe in run.probes:
        for name, q in run.quantities(probe).items():
            if q.axes == ("layer",):
                steps, values, _, labels = run.array(probe, name)
                for j, layer in enumerate(labels["layer"]):
                    expected[f"{probe}/{name}/{layer}"] = (steps, values[:, j])
            elif q.axes == ():
                steps, values, _, _ = run.array(probe, name)
                expected[f"{probe}/{name}"] = (steps, values)
    for name in run.scalar_names():
        expected[name] = run.scalar(name)
    assert set(events.Tags()["scalars"]) == set(expected)
    assert counts["scalars"] == sum(len(steps) for steps, _ in expected.values())
    for tag, (steps, values) in expected.items():
        read = events.Scalars(tag)
        assert [e.step for e in read] == steps.tolist(), tag
        np.testing.assert_array_equal([e.value for e in read], np.asarray(values, dtype=np.float32), err_msg=tag)


def test_the_event_encoder_matches_tensorboard_s_reader_for_large_steps(tmp_path):
    """CRC-32C (the check value of '123456789' is 0xe3069283) and padded step varints up to 2**35 - 1."""
    from gradlens.export.events import EventFile, ScalarLayout, crc32c

    assert crc32c(b"123456789") == 0xE3069283
    out = EventFile(tmp_path)
    steps = np.array([0, 1, 127, 128, 2**21, 2**28 + 5, 2**35 - 1])
    values = np.array([[1.5, -np.inf], [np.nan, 0.0], [1e-30, 3.0], [2.0, 2.0], [7.0, 8.0], [9.0, 1e30], [0.25, -0.5]])
    out.write(ScalarLayout(["a", "b/ünï"], out.wall_time).encode(steps, values))
    out.close()
    events = accumulator(tmp_path)
    for j, tag in enumerate(["a", "b/ünï"]):
        read = events.Scalars(tag)
        assert [e.step for e in read] == steps.tolist()
        np.testing.assert_array_equal([e.value for e in read], values[:, j].astype(np.float32))


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_tables_are_written_slab_by_slab_and_equal_the_loaded_run(run, tmp_path, monkeypatch, fmt):
    import gradlens.export.tensorboard as tensorboard
    from gradlens.export import tables

    monkeypatch.setattr(tensorboard, "SLAB_VALUES", 2 * len(LAYERS))  # 2 records of a [layer] quantity per slab
    out = tmp_path / fmt
    assert main(["export", run.path, f"--{fmt}", str(out)]) == 0
    read = pd.read_csv if fmt == "csv" else pd.read_parquet
    expected = tables(run)
    tidy = read(out / f"grads_every_step.{fmt}")
    pd.testing.assert_frame_equal(tidy, run.frame("grads_every_step"), check_dtype=False)
    hist = read(out / f"grads_every_step.hist.{fmt}")
    pd.testing.assert_frame_equal(hist, expected["grads_every_step.hist"], check_dtype=False)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        assert pq.ParquetFile(out / "grads_every_step.parquet").num_row_groups == 5 * 3  # 5 quantities x 3 slabs
