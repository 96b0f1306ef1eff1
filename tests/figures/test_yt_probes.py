"""Document 004's probe, simulation and schematic items plot exactly what their HDF5 files hold."""

from __future__ import annotations

import numpy as np
import pytest

from analyses.runner import plan
from figures.base import config, open_recorded
from figures.yt_fig3 import cushions, log_bins
from gradlens.loader import Run, load
from gradlens.metrics import trivial_sigma_conclusion, trivial_sigma_eq11
from gradlens.models.schematic import SchematicGraph
from gradlens.results import Result

ITEMS = ("yt-fig1", "yt-fig3", "yt-fig4", "yt-fig10", "yt-fig11", "yt-fig12", "yt-tab-icushion")


@pytest.fixture(scope="module")
def made(smoke_figures):
    return smoke_figures(*ITEMS)


def stored(smoke_figures, analysis: str, **match: object) -> list[Result]:
    """The computed results of ``analysis`` under the smoke folder (training siblings excluded)."""
    found = [open_recorded(p) for p in sorted((smoke_figures.out / "runs" / analysis).glob("*.h5"))]
    return [r for r in found if isinstance(r, Result) and all(config(r).get(k) == v for k, v in match.items())]


def simplified(smoke_figures, **match: object) -> list[Run]:
    """The simplified nets the noise-stability items read: the simplified_training runs of ``simplified_noise``'s
    plan, loaded straight from their files."""
    runs = [load(spec.path(smoke_figures.out / "runs")) for spec in plan("simplified_noise", "smoke")]
    return [r for r in runs if all(config(r).get(k) == v for k, v in match.items())]


def recorded(run: Run, probe: str, quantity: str) -> np.ndarray:
    """Every record of ``probe``/``quantity`` of a training run."""
    return run.array(probe, quantity)[1]


def test_files_and_captions(made):
    for item in ITEMS:
        assert made[item].files and all(path.stat().st_size > 0 for path in made[item].files), item
        assert "scale: smoke" in made[item].caption, item


def test_fig3_bars_are_the_stored_cushions(made, smoke_figures):
    axes = made["yt-fig3"].figure.axes
    depths = sorted({config(r)["depth"] for r in simplified(smoke_figures)})
    assert len(axes) == len(depths)
    for ax, depth in zip(axes, depths, strict=True):
        (plain,) = simplified(smoke_figures, depth=depth, kind="plain")
        (residual,) = simplified(smoke_figures, depth=depth, kind="residual")
        rows = [cushions(plain)[1], cushions(residual)[1]]
        heights = np.array([patch.get_height() for patch in ax.patches])
        expected = np.concatenate([np.histogram(row, bins=log_bins(row))[0] for row in rows])
        np.testing.assert_array_equal(heights, expected)
        assert made["yt-fig3"].numbers[f"median mu residual {depth}"] == float(np.median(rows[1]))


def test_fig10_density_is_the_summed_histogram(made, smoke_figures):
    runs = sorted(simplified(smoke_figures, kind="residual"), key=lambda r: config(r)["depth"])
    for ax, run in zip(made["yt-fig10"].figure.axes, runs, strict=True):
        counts = recorded(run, "final_grad_hist", "counts").sum(axis=0)
        edges = recorded(run, "final_grad_hist", "edges")[0]
        drawn = ax.patches[0].get_data()
        np.testing.assert_array_equal(drawn.edges, edges)
        total = recorded(run, "final_grad_hist", "count").sum()
        np.testing.assert_allclose(drawn.values, counts / (total * np.diff(edges)))
        one_firing = recorded(run, "final_grad_hist", "mean")
        if len(one_firing) == 1:
            assert made["yt-fig10"].numbers[f"mean depth {config(run)['depth']}"] == pytest.approx(one_firing[0])


def test_fig12_lines_are_the_stored_sigma(made, smoke_figures):
    ax_simplified, ax_fledged = made["yt-fig12"].figure.axes
    depth = min(config(r)["depth"] for r in simplified(smoke_figures))
    for ax, family in ((ax_simplified, "simplified"), (ax_fledged, "fledged")):
        lines = ax.get_lines()
        for offset, kind in ((0, "plain"), (2, "residual")):
            if family == "simplified":
                (run,) = simplified(smoke_figures, kind=kind, depth=depth)
                sigma = recorded(run, "dominant_flow", "sigma")
            else:
                (run,) = stored(smoke_figures, "noise_stability", kind=kind, family=family)
                sigma = run["dominant_flow/sigma"]
            np.testing.assert_array_equal(lines[offset].get_ydata(), sigma[0])
            np.testing.assert_array_equal(lines[offset + 1].get_ydata(), sigma[-1])
            # the last activation feeds the average pool alone: Θ is diagonal there, so σ = 1 exactly
            np.testing.assert_array_equal(sigma[:, -1], 1.0)


def test_fig11_curves_are_the_stored_simulation_and_the_closed_forms(made, smoke_figures):
    runs = sorted(stored(smoke_figures, "trivial_case"), key=lambda r: config(r)["panel"])
    for ax, run in zip(made["yt-fig11"].figure.axes, runs, strict=True):
        lines = ax.get_lines()
        data = [line.get_ydata() for line in lines if len(line.get_ydata()) == len(run["x"])]
        np.testing.assert_array_equal(data[0], run["plain"])
        np.testing.assert_array_equal(data[1], run["residual"])
        np.testing.assert_array_equal(lines[-2].get_ydata(), run["eq11"])
        np.testing.assert_array_equal(lines[-1].get_ydata(), run["conclusion"])
        parameter, defaults = config(run)["parameter"], config(run)["defaults"]
        x = run["x_dense"][-1]
        setting = {k: v for k, v in defaults.items() if k != "sigma_v"}
        if parameter != "sigma_v":
            setting[parameter] = int(x) if parameter in ("n", "l") else float(x)
        assert run["eq11"][-1] == pytest.approx(trivial_sigma_eq11(**setting), rel=1e-12)
        assert run["conclusion"][-1] == pytest.approx(trivial_sigma_conclusion(**setting), rel=1e-12)


def test_icushion_table_is_the_stored_mu(made, smoke_figures):
    from analyses.noise_stability import ICUSHION_READINGS
    from figures.yt_tab_icushion import READING_LABELS

    table = made["yt-tab-icushion"].table
    for kind in ("plain", "residual"):
        (run,) = stored(smoke_figures, "noise_stability", family="fledged", kind=kind)
        rows = table[table["net"] == config(run)["model"]]
        for probe, reading in ICUSHION_READINGS.items():  # running, batch and per-sample BN statistics
            mu = run[f"{probe}/mu"][:, 0]
            label = READING_LABELS[reading]
            np.testing.assert_allclose(rows[f"mean, {label}"].to_numpy(), np.nanmean(mu, axis=1), rtol=1e-12)
            np.testing.assert_allclose(rows[f"sd, {label}"].to_numpy(), np.nanstd(mu, axis=1), rtol=1e-12)
        if kind == "plain":  # issue 14.2: BN normalising by its input makes the plain block ε-sized
            assert (run["interlayer_cushion_batch/mu"] < 1e-3).all()
            assert (run["interlayer_cushion_sample/mu"] < 1e-3).all()


def test_schematics_count_the_skips_of_the_stored_graphs(made, smoke_figures):
    (result,) = stored(smoke_figures, "schematics")
    for item, drawing, skips in (("yt-fig1", "simplified_blocks", 3), ("yt-fig4", "simplified_nets", 18)):
        plain, residual = (SchematicGraph.from_json(str(result[f"graph/{drawing}/{i}"])) for i in (0, 1))
        assert sum(e.kind == "skip" for e in plain.edges) == 0
        assert sum(e.kind == "skip" for e in residual.edges) == skips  # one identity per depth-1 block
        assert made[item].numbers["skip edges (residual)"] == skips
