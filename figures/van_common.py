"""What the items of document 002 (VAN) share: mean ± sd over seeds, the not-run marker of optional data, the
architecture labels, and both panels of the pre-activation figures (van-fig2 and van-fig3 differ only in the
dataset and depth they ask for). Not a figure module; imports only :mod:`figures.base` of ``figures/``."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from analyses.optional_data import is_not_run, not_run_reason
from figures.base import (
    FigureInputs,
    FigureOutput,
    Recorded,
    chance_check,
    config,
    describe,
    final_scalar,
    save_figure,
    scalar_values,
    values_of,
)
from gradlens.models.van import alpha_trajectory, phaseout_closed_form


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (NaN for one value)."""
    array = np.asarray(values, dtype=float)
    return float(array.mean()), float(array.std(ddof=1)) if array.size > 1 else float("nan")


def split_not_run(runs: Sequence[Recorded]) -> tuple[list[Recorded], list[str]]:
    """(runs that ran, distinct reasons of those marked not run)."""
    ran = [r for r in runs if not is_not_run(r)]
    reasons = sorted({not_run_reason(r) for r in runs if is_not_run(r)})
    return ran, reasons


LABELS = {"resnet": "ResNet", "van": "VAN", "van0": "VAN (λ=0)", "plain": "Plain"}
COLOURS = {"resnet": "C0", "van": "C3", "van0": "C1", "plain": "k"}


DOC_EPOCHS, DOC_REMOVAL_EPOCH = 165, 120  # document 002, 4.2: 165 epochs; skips gone "at approximately the 120th"


def readings_note(first: dict, numbers: dict) -> str:
    """The phase-out speed of each reading of eqs. 6–8 (issue 14.3b), from this run's η, η′ and λ_0, beside the
    document's account; adds the closed-form numbers to ``numbers``."""
    eta, ratio, lam0 = first["lr"], first["lambda_lr_ratio"], first["lambda_init"]
    per_epoch = numbers.get("steps per epoch")
    _, theta, _, removal = phaseout_closed_form(eta, ratio, lam0)
    numbers["closed-form removal step, eq. 7 per step (∂C/∂α = 0)"] = removal

    def first_one(**reading: object) -> int:
        return 1 + next(t for t, a in enumerate(alpha_trajectory(10 * removal, eta, ratio, lam0, **reading)) if a == 1)

    return (
        f"Phase-out speed (eqs. 7–8 with η = {eta:g}, η′ = {ratio:g}·η, λ_0 = {lam0:g}, α_0 = 0; closed form "
        f"with ∂C/∂α = 0, tested in tests/models/test_van.py): α reaches 1 after {removal} steps"
        + (f" ({removal / per_epoch:.2f} epoch)" if per_epoch else "")
        + f"; the document's Figure 2 shows the skips gone at ≈ epoch {DOC_REMOVAL_EPOCH} of {DOC_EPOCHS}, "
        f"i.e. after ≈ {DOC_REMOVAL_EPOCH * 391:,} of its steps (391 a epoch), {DOC_REMOVAL_EPOCH / DOC_EPOCHS:.0%} "
        f"of training (dotted gold line, at the same fraction of this run). Other readings: α and λ updated once "
        f"per epoch: after {removal} epochs; λ counted twice in eq. 7: {first_one(double_lambda=True)} steps; "
        f"momentum 0.9 on α: {first_one(momentum=0.9)} steps; no clip: α swings past 1 and back with half-period "
        f"π/θ = {math.pi / theta:.0f} steps and never settles. Only the loss summed over the batch (∂C/∂α × B) "
        "delays the removal: mini-batch noise in B·∂C/∂α keeps α off the clip until the learning rate drops. "
        + alpha_update_reading(first)
    )


def alpha_update_reading(cfg: dict) -> str:
    """The reading of document 002's α update (eqs. 7–8) that the runs of configuration ``cfg`` used, from its
    recorded ``alpha_grad_scale`` s (absent in older runs: 1, :class:`gradlens.models.van.VANUpdate`'s default),
    ``lambda_lr_ratio`` and ``batch_size``."""
    scale = float(cfg.get("alpha_grad_scale", 1.0))
    if scale == 1:
        meaning = "∂C/∂α of the batch-mean loss (the literal reading)"
    else:
        meaning = f"∂C/∂α read as that of the loss summed over a batch of {scale:g} samples"
        if cfg["batch_size"] != scale:
            meaning += f" (at batch {cfg['batch_size']}: the batch-mean gradient × {scale:g}, an estimate of that sum)"
    return (
        f"VAN α update (document 002, eqs. 7–8), after every SGD step: α ← clip(α − η·(s·∂C/∂α + λ), 0, 1), then "
        f"λ ← λ + η′·(α − 1), η′ = {cfg['lambda_lr_ratio']:g}·η, with s = {scale:g}: {meaning}; VAN (λ=0) keeps "
        "λ = 0 (docs/figures.md, 'VAN phase-out speed'). "
    )


def lr_schedule(train: dict) -> list[tuple[int, int, float]]:
    """``(first epoch, last epoch, η)`` of each constant learning rate of a recorded training configuration
    (``TrainConfig.to_dict()``: ``lr``, ``milestones``, ``gamma``, ``epochs``): η = lr · gamma^k in epoch e
    (1-based), k = the number of milestones m < e, as torch's ``MultiStepLR`` stepped after every epoch."""
    stretches: list[tuple[int, int, float]] = []
    for epoch in range(1, train["epochs"] + 1):
        eta = train["lr"] * train["gamma"] ** sum(m < epoch for m in train["milestones"])
        if stretches and stretches[-1][2] == eta:
            stretches[-1] = (stretches[-1][0], epoch, eta)
        else:
            stretches.append((epoch, epoch, eta))
    return stretches


def schedule_text(train: dict, per_epoch: int) -> str:
    """'η = 0.1 for epochs 1–2 (steps 1–500), 0.01 for epoch 3 (steps 501–750), …' from :func:`lr_schedule`."""

    def span(first: int, last: int) -> str:
        epochs = f"epoch {first}" if first == last else f"epochs {first}–{last}"
        return f"{epochs} (steps {(first - 1) * per_epoch + 1}–{last * per_epoch})"

    return "η = " + ", ".join(f"{eta:.3g} for {span(first, last)}" for first, last, eta in lr_schedule(train))


def plain_degradation(plain: dict[int, float]) -> str:
    """A sentence when the plain net (``plain``: depth -> mean test accuracy) loses less than half a point from its
    best depth to the deepest: then the document's premise (a plain net that degrades, which VAN avoids) is absent
    from these runs."""
    if len(plain) < 2:
        return ""
    deepest = max(plain)
    loss = max(plain.values()) - plain[deepest]
    if loss >= 0.005:
        return ""
    shown = ", ".join(f"{100 * plain[d]:.2f} % at {d}" for d in sorted(plain))
    return (f"Here the plain net does not degrade with depth ({shown}): the document's premise, a plain net that "
            "degrades and that VAN should not, is absent from these runs, so 'VAN ≥ plain' compares two nets that "
            "both train to the data's ceiling. ")


def pick_dataset(runs: list, wanted: str) -> tuple[str, str]:
    """(dataset to show, note): ``wanted`` when its runs exist, else the runs' dataset with a note saying so."""
    present = values_of(runs, "dataset")
    if wanted in present:
        return wanted, ""
    shown = present[0]
    return shown, f"The document's {wanted} is not in this scale's runs: the panels show {shown} instead (substitute)"


def steps_per_epoch(run) -> int:
    """Optimizer steps per epoch, from the step at which epoch 1 was logged."""
    frame = run.scalars()
    return int(frame.loc[frame["name"] == "epoch", "step"].iloc[0]) + 1


def depth_table(runs: list, variants: Sequence[str] = tuple(LABELS)) -> pd.DataFrame:
    """Final test accuracy per variant × depth (variants in the order of ``variants``): mean, sd, best over seeds,
    the number of seeds and ``seed_accs``, the ``(seed, accuracy)`` of each run in seed order."""
    rows = []
    for variant in [v for v in variants if any(config(r)["variant"] == v for r in runs)]:
        chosen = [r for r in runs if config(r)["variant"] == variant]
        for depth in values_of(chosen, "depth"):
            seed_accs = sorted((config(r)["seed"], final_scalar(r, "test_acc")) for r in chosen
                               if config(r)["depth"] == depth)
            accs = [acc for _, acc in seed_accs]
            mean, sd = mean_sd(accs)
            rows.append(
                {
                    "variant": variant,
                    "depth": depth,
                    "test_acc_mean": mean,
                    "test_acc_sd": sd,
                    "test_acc_best": max(accs),
                    "seeds": len(accs),
                    "seed_accs": tuple(seed_accs),
                }
            )
    return pd.DataFrame(rows)


def accuracy_errorbars(ax, table: pd.DataFrame, styles: dict[str, tuple[str, str]], labels: dict[str, str]) -> None:
    """Mean ± sd (error bar) test accuracy vs depth of every variant of ``table`` (:func:`depth_table`) on ``ax``,
    each in its ``styles[variant]`` = (colour, marker), labelled ``labels[variant]``."""
    for variant, group in table.groupby("variant", sort=False):
        colour, marker = styles[variant]
        ax.errorbar(
            group["depth"],
            group["test_acc_mean"],
            yerr=np.nan_to_num(group["test_acc_sd"]),
            color=colour,
            marker=marker,
            ms=4,
            capsize=3,
            label=labels[variant],
        )


def draw_preact(
    inputs: FigureInputs, out_dir: Path, item_id: str, wanted: str, curve_depth: int, figure_no: int
) -> FigureOutput:
    """Both panels of document 002's Figure 2 (``wanted="cifar10"``, 26 layers) or 3 (cifar100, 18)."""
    dataset, note = pick_dataset(inputs.runs["van_preact"], wanted)
    runs = [r for r in inputs.runs["van_preact"] if config(r)["dataset"] == dataset]
    if note and len(values_of(inputs.runs["van_preact"], "dataset")) == 1:
        other = {"van-fig2": "van-fig3", "van-fig3": "van-fig2"}.get(item_id, "the other pre-activation figure")
        note += (  # one sentence: the gallery lists each substitution sentence of a caption
            f"; the {inputs.scale} scale trains the pre-activation sweep on {dataset} only (one dataset that needs no "
            f"download, for both CIFARs, so that one sweep fits the scale's time budget), so {other} draws on the "
            "same runs: the left panels of van-fig2 and van-fig3 are the same panel, not two datasets, and the right "
            "panels differ only in the depth of their curves"
        )
    note += ". " if note else ""
    table = depth_table(runs)
    depths = values_of(runs, "depth")
    depth = min(depths, key=lambda d: (abs(d - curve_depth), -d))
    if depth != curve_depth:
        note += f"Curves at {depth} layers (the document's {curve_depth} was not run at this scale). "
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8))
    accuracy_errorbars(left, table, {variant: (colour, "o") for variant, colour in COLOURS.items()}, LABELS)
    left.set_xlabel("depth 8n+2")
    left.set_ylabel("test accuracy")
    left.set_xticks(depths)
    left.set_title(f"{dataset}: test accuracy vs depth")
    left.legend(fontsize=8)
    left.grid(alpha=0.3)
    numbers: dict[str, object] = {}
    alpha_ax = right.twinx()
    for variant in ("van", "plain"):
        chosen = [r for r in runs if config(r)["variant"] == variant and config(r)["depth"] == depth]
        if not chosen:
            continue
        epochs = scalar_values(chosen[0], "epoch")
        train_err = 1 - np.mean([scalar_values(r, "train_acc") for r in chosen], axis=0)
        test_err = 1 - np.mean([scalar_values(r, "test_acc") for r in chosen], axis=0)
        right.plot(epochs, train_err, color=COLOURS[variant], ls="--", marker=".", label=f"{LABELS[variant]} train")
        right.plot(epochs, test_err, color=COLOURS[variant], ls="-", marker="o", ms=4, label=f"{LABELS[variant]} test")
        numbers[f"{LABELS[variant]} {depth}: final test error"] = float(test_err[-1])
        numbers[f"{LABELS[variant]} {depth}: final train error"] = float(train_err[-1])
    vans = sorted((r for r in runs if config(r)["variant"] == "van" and config(r)["depth"] == depth),
                  key=lambda r: config(r)["seed"])
    per_seed = alpha_panel(alpha_ax, vans, numbers)
    if vans:
        doc_epoch = DOC_REMOVAL_EPOCH / DOC_EPOCHS * config(vans[0])["epochs"]
        right.axvline(  # on the error axis (same x): the α axis holds only the measured α-residuals
            doc_epoch,
            color="goldenrod",
            ls=":",
            lw=1.5,
            label=f"document: skips gone ≈ epoch {DOC_REMOVAL_EPOCH} of {DOC_EPOCHS} (same fraction here)",
        )
    right.set_xlabel("epoch")
    right.set_ylabel("error (1 − accuracy)")
    right.set_yscale("log")
    right.set_title(f"{dataset}: {depth} layers, VAN vs plain (errors: mean over seeds)")
    lines = right.get_legend_handles_labels()
    extra = alpha_ax.get_legend_handles_labels()
    # below the axes: inside, the entries covered the curves
    right.legend(lines[0] + extra[0], lines[1] + extra[1], fontsize=8, loc="upper center",
                 bbox_to_anchor=(0.5, -0.14), ncol=2, frameon=False)
    right.grid(alpha=0.3, which="both")
    fig.suptitle(f"Pre-activation nets, ResNet vs VAN vs plain (document 002, Figure {figure_no})")
    fig.tight_layout()
    for _, row in table.iterrows():
        numbers[f"{LABELS[row['variant']]} depth {row['depth']}: test acc"] = float(row["test_acc_mean"])
    first = config(runs[0])
    per_epoch = steps_per_epoch(runs[0])
    verdict = ""
    if per_seed:
        verdict += f"α-residual of VAN-{depth} (document: skips gone at ≈ epoch 120 of 165): {per_seed}. "
    if f"VAN {depth}: final test error" in numbers and f"Plain {depth}: final test error" in numbers:
        van, plain = numbers[f"VAN {depth}: final test error"], numbers[f"Plain {depth}: final test error"]
        verdict += (
            f"VAN's final test error at {depth} layers is {100 * van:.1f} % vs plain {100 * plain:.1f} % (mean over "
            "seeds): " + ("'VAN ≥ plain' holds. " if van <= plain else "'VAN ≥ plain' does NOT hold here. ")
            + plain_degradation({int(row["depth"]): float(row["test_acc_mean"])
                                 for _, row in table.iterrows() if row["variant"] == "plain"})
        )
    if vans:
        verdict += readings_note(first, numbers)
    caption = (
        note
        + verdict
        + f"Left: final test accuracy vs depth, mean ± sd over seeds. Right: per-epoch train error (running, "
        f"dashed) and test error (solid) of VAN and plain at {depth} layers, mean over seeds, and the α-residual of "
        f"every VAN seed per step (gold, right axis, log scale; x = step / steps per epoch). Width {first['width']}, "
        f"learning rate as recorded: {schedule_text(first['train'], per_epoch)}; momentum {first['momentum']}, "
        f"batch {first['batch_size']}, weight decay {first['weight_decay']}, η′ = {first['lambda_lr_ratio']}·η, "
        f"λ init {first['lambda_init']}; no data augmentation. {describe(runs, inputs.scale)}"
    )
    caption = chance_check(runs).annotate(caption, numbers)
    return FigureOutput(save_figure(fig, out_dir, item_id), caption, numbers, figure=fig, table=table)


ALPHA_FLOOR = 1e-7
"""The α-residual axis is logarithmic; values below this (0 included: every α clipped at 1) are drawn at it."""
SEED_STYLES = ("-", "--", ":", "-.")


def alpha_panel(ax, vans: list[Recorded], numbers: dict[str, object]) -> str:
    """Draw the α-residual of every VAN run in ``vans`` (one seed each) on ``ax`` (log scale, floored at
    :data:`ALPHA_FLOOR`); add per-seed numbers; return the caption clause per seed ('' without runs)."""
    if not vans:
        return ""
    per_epoch = steps_per_epoch(vans[0])
    clauses, floored = [], False
    for k, run in enumerate(vans):
        seed, accuracy = config(run)["seed"], final_scalar(run, "test_acc")
        steps, residual, _, _ = run.array("van_alpha", "residual")
        floored |= bool((residual < ALPHA_FLOOR).any())
        ax.plot(steps / per_epoch, np.maximum(residual, ALPHA_FLOOR), color="goldenrod", lw=2.0,
                ls=SEED_STYLES[k % len(SEED_STYLES)],
                label=f"VAN α-residual, seed {seed} ({100 * accuracy:.1f} % test)")
        above = np.flatnonzero(residual > 1e-6)  # the skips are gone for good after the last of these
        gone = ("never" if above.size and above[-1] == residual.size - 1
                else int(steps[above[-1] + 1]) if above.size else int(steps[0]))
        numbers[f"α-residual final, seed {seed}"] = float(residual[-1])
        numbers[f"step from which α-residual <= 1e-6, seed {seed}"] = gone
        reached = ("still above 1e-6 at the end" if gone == "never"
                   else f"≤ 1e-6 from step {gone} of {int(steps[-1]) + 1} on (epoch {gone / per_epoch:.1f})")
        clauses.append(f"seed {seed} ({100 * accuracy:.1f} % test accuracy) {reached}, final {residual[-1]:.2g}")
    numbers["α-residual at step 0 (max over seeds)"] = max(float(run.array("van_alpha", "residual")[1][0])
                                                          for run in vans)
    numbers["steps per epoch"] = per_epoch
    ax.set_yscale("log")
    ax.set_ylim(ALPHA_FLOOR / 2, 2.0)
    ax.set_ylabel("mean α-residual (1/L)Σ mean(1−α)², log scale"
                  + (f"\n(values < {ALPHA_FLOOR:g}, 0 included, drawn at {ALPHA_FLOOR:g})" if floored else ""),
                  color="goldenrod")
    return "; ".join(clauses)
