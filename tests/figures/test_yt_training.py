"""Document 004's training comparisons (yt-tab1…5, yt-fig2, 6, 7, 9) plot exactly what the HDF5 files hold,
and what the files hold is right (initial regulariser, cost − loss, the weights p and t = T(r))."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest
import torch

from gradlens import load
from gradlens.models import create_model
from gradlens.models.transforms import id_entries
from gradlens.results import load_result
from gradlens.train import load_checkpoint

IDS = ("yt-tab1", "yt-tab2", "yt-tab3", "yt-tab4", "yt-tab5", "yt-fig2", "yt-fig6", "yt-fig7", "yt-fig9")


@pytest.fixture(scope="module")
def made(smoke_figures):
    return smoke_figures(*IDS)


def _epochs(run, name):
    scalars = run.scalars()
    return scalars.loc[scalars["name"] == name, "value"].to_numpy()


def _runs(smoke_figures, analysis):
    """(kind, depth) -> runs in seed order, read straight from the files."""
    found = defaultdict(list)
    for path in sorted((smoke_figures.out / "runs" / analysis).glob("*.h5")):
        if path.name.endswith(".weights.h5"):
            continue
        run = load(path)
        found[run.meta["config"]["kind"], run.meta["config"]["depth"]].append(run)
    return {key: sorted(runs, key=lambda r: r.meta["config"]["seed"]) for key, runs in found.items()}


def _mean_sd(values):
    values = np.asarray(values, dtype=np.float64)
    return values.mean(axis=0), values.std(axis=0, ddof=1)


def test_files_are_written(made):
    for output in made.values():
        assert output.files and all(path.stat().st_size > 0 for path in output.files)
        assert "scale: smoke" in output.caption and "seeds:" in output.caption


def test_tab1_tab5_equal_the_final_epoch_scalars(made, smoke_figures):
    runs = _runs(smoke_figures, "simplified_training")
    names = {"plain": "PlnNet", "residual": "ResNet", "dominant": "T′ net"}
    for item, kinds in (("yt-tab1", ("plain", "residual")), ("yt-tab5", ("residual", "dominant"))):
        table = made[item].table.set_index(["network", "depth"])
        assert len(table) == 2 * len({d for _, d in runs})
        for (kind, depth), group in runs.items():
            if kind not in kinds:
                continue
            row = table.loc[names[kind], depth]
            loss = [_epochs(r, "epoch_train_loss")[-1] for r in group]
            error = [1 - _epochs(r, "test_acc")[-1] for r in group]
            assert row["L"] == pytest.approx(np.mean(loss), rel=1e-12)
            assert row["L sd"] == pytest.approx(np.std(loss, ddof=1), rel=1e-9)
            assert row["E"] == pytest.approx(np.mean(error), rel=1e-12)
            if item == "yt-tab1":
                assert row["C"] == pytest.approx(np.mean([_epochs(r, "cost")[-1] for r in group]), rel=1e-12)


def test_cost_minus_loss_is_the_penalty_of_the_trained_weights(smoke_figures):
    for group in _runs(smoke_figures, "simplified_training").values():
        run = group[0]
        state = load_checkpoint(run.path.replace(".h5", ".ckpt.pt")).model
        penalty = 1e-4 * sum(float((v.double() ** 2).sum()) for k, v in state.items() if not k.endswith("mask"))
        reg = _epochs(run, "cost")[-1] - _epochs(run, "epoch_train_loss")[-1]
        assert reg == pytest.approx(penalty, rel=1e-4)


def test_tab4_before_is_the_initial_regulariser(made, smoke_figures):
    table = made["yt-tab4"].table.set_index(["training", "network", "depth"])
    for (kind, depth), group in _runs(smoke_figures, "simplified_training").items():
        if kind == "dominant":
            continue
        name = {"plain": "PlnNet", "residual": "ResNet"}[kind]
        regs = []
        for run in group:
            torch.manual_seed(run.meta["config"]["seed"])
            model = create_model(run.meta["config"]["model"], in_channels=1, image_size=8)
            regs.append(1e-4 * sum(float((p.detach().double() ** 2).sum()) for p in model.parameters()))
            assert run.meta["config"]["initial_weight_reg"] == pytest.approx(regs[-1], rel=1e-5)
        assert table.loc[("before", name, depth), "weight reg"] == pytest.approx(np.mean(regs), rel=1e-5)
        after = [_epochs(r, "cost")[-1] - _epochs(r, "epoch_train_loss")[-1] for r in group]
        assert table.loc[("after", name, depth), "weight reg"] == pytest.approx(np.mean(after), rel=1e-12)


def test_fig2_and_fig9_plot_the_seed_means(made, smoke_figures):
    runs = _runs(smoke_figures, "simplified_training")
    depths = sorted({d for _, d in runs})
    loss = {key: np.stack([_epochs(r, "epoch_train_loss") for r in group]) for key, group in runs.items()}
    left, right = made["yt-fig2"].figure.axes
    first = depths[0]
    np.testing.assert_allclose(left.get_lines()[0].get_ydata(), loss["plain", first].mean(0), rtol=1e-12)
    np.testing.assert_allclose(left.get_lines()[1].get_ydata(), loss["residual", first].mean(0), rtol=1e-12)
    error = np.stack([1 - _epochs(r, "test_acc") for r in runs["residual", first]])
    np.testing.assert_allclose(right.get_lines()[1].get_ydata(), error.mean(0), rtol=1e-12)
    left, right = made["yt-fig9"].figure.axes
    curves = [line.get_ydata() for line in left.get_lines()]
    expected = [loss[kind, d].mean(0) for d in depths[-2:] for kind in ("plain", "residual")]
    for got, want in zip(curves, expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-12)
    for line, depth in zip(right.get_lines(), depths, strict=True):
        np.testing.assert_allclose(line.get_ydata(), (loss["plain", depth] - loss["residual", depth]).mean(0),
                                   rtol=1e-12, atol=1e-15)


def test_tab2_and_fig6_show_the_equivalent_pairs(made, smoke_figures):
    runs = _runs(smoke_figures, "equivalence")
    table = made["yt-tab2"].table.set_index("depth")
    for depth in {d for _, d in runs}:
        plain, residual = runs["plain", depth][0], runs["residual", depth][0]
        step_p, step_r = _epochs(plain, "train_loss"), _epochs(residual, "train_loss")
        gap = np.abs(step_p - step_r)
        assert gap.max() < 1e-12
        assert table.loc[depth, "max |ΔL| per step"] == gap.max()
        assert table.loc[depth, "PlnNet C"] == _epochs(plain, "cost")[-1]
        assert table.loc[depth, "ResNet E"] == 1 - _epochs(residual, "test_acc")[-1]
    depth = min(d for _, d in runs)
    plain, residual = runs["plain", depth][0], runs["residual", depth][0]
    left, right = made["yt-fig6"].figure.axes
    np.testing.assert_array_equal(left.get_lines()[0].get_ydata(), _epochs(plain, "train_loss"))
    np.testing.assert_array_equal(left.get_lines()[1].get_ydata(), _epochs(residual, "train_loss"))
    gap = np.abs(_epochs(plain, "train_loss") - _epochs(residual, "train_loss"))
    np.testing.assert_array_equal(right.get_lines()[0].get_ydata(), np.where(gap > 0, gap, np.nan))


def test_weights_are_p_and_t_and_tab3_fig7_read_them(made, smoke_figures):
    files = {}
    for path in (smoke_figures.out / "runs" / "simplified_training").glob("*.weights.h5"):
        result = load_result(path)
        files[result.meta["config"]["kind"], result.meta["config"]["seed"]] = result
    seed = min(s for _, s in files)
    plain, residual = files["plain", seed], files["residual", seed]
    torch.manual_seed(seed)
    resnet = create_model(residual.meta["config"]["model"], in_channels=1, image_size=8)
    r0 = torch.cat([p.detach().double().flatten() for n, p in resnet.named_parameters() if n.endswith("weight")])
    ids = torch.cat([(id_entries(p) > 0 if n.startswith("group") else torch.zeros_like(p, dtype=torch.bool)).flatten()
                     for n, p in resnet.named_parameters() if n.endswith("weight")])
    np.testing.assert_array_equal(residual["id_entry"], ids.numpy())
    np.testing.assert_allclose(residual["init"], (r0 + ids.double()).numpy(), rtol=1e-6, atol=1e-7)
    table = made["yt-tab3"].table.set_index("statistic")
    vectors = {"p0": plain["init"], "p_end": plain["final"], "t0": residual["init"], "t_end": residual["final"]}
    for name, w in vectors.items():
        w = w.astype(np.float64)
        mask = residual["id_entry"]
        assert table.loc["mean", name] == pytest.approx(w.mean(), rel=1e-12)
        assert table.loc["mass: all weights", name] == pytest.approx(np.abs(w).sum(), rel=1e-12)
        assert table.loc["mass: |w| ≥ 0.25", name] == pytest.approx(np.abs(w[np.abs(w) >= 0.25]).sum(), rel=1e-12)
        assert table.loc["mass: ID entries", name] == pytest.approx(np.abs(w[mask]).sum(), rel=1e-12)
    bottom_before = made["yt-fig7"].figure.axes[2]
    heights = [patch.get_height() for patch in bottom_before.patches]
    counts, _ = np.histogram(residual["init"][residual["id_entry"]], bins=np.linspace(-1.5, 1.5, 121))
    np.testing.assert_array_equal(heights[: len(counts)], counts)
