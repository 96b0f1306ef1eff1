"""yt-tab1: training loss L, cost C and test error E of simplified PlnNets and ResNets, depths 20/32/44
(document 004, appendix A, Table 1).

Also holds the readers shared by the other training-comparison items of document 004 (yt-tab4, yt-tab5,
yt-fig2, yt-fig9): per-epoch scalars of a run, runs of one kind and depth in seed order, mean ± sd.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from figures.base import FigureInputs, FigureOutput, Recorded, chance_check, config, describe, save_table, scalar_values

ID = "yt-tab1"
ANALYSES = ("simplified_training",)
NEEDS = {"simplified_training": ("scalars/epoch_train_loss", "scalars/cost", "scalars/test_acc", "grad_stats/norm")}
TRAINED_NETS = True
CLAIM = (
    "ResNets have smaller L and E than PlnNets of equal depth; PlnNets degrade with depth (L × 6.85 from depth "
    "20 to 44) much more than ResNets (× 1.73) (document 004, appendix A, Table 1)."
)
NAMES = {"plain": "PlnNet", "residual": "ResNet", "dominant": "T′ net"}
CHANCE_LOSS = math.log(10)
PLATEAU = 0.9 * CHANCE_LOSS


def seed_runs(inputs: FigureInputs, analysis: str, **match: object) -> list[Recorded]:
    """Runs of ``analysis`` matching ``match``, in seed order; an error naming the match when none."""
    found = sorted(inputs.of(analysis, **match), key=lambda r: config(r)["seed"])
    if not found:
        raise ValueError(f"no {analysis} run with {match}")
    return found


def mean_sd(values: np.ndarray, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Mean and sample standard deviation (ddof 1; 0 for a single seed) over ``axis``."""
    values = np.asarray(values, dtype=np.float64)
    sd = values.std(axis=axis, ddof=1) if values.shape[axis] > 1 else np.zeros_like(values.mean(axis=axis))
    return values.mean(axis=axis), sd


def final_metrics(run: Recorded) -> dict[str, float]:
    """L (last epoch's training loss), C (cost), E (test error) after training, and the regulariser C − L."""
    loss, cost = scalar_values(run, "epoch_train_loss")[-1], scalar_values(run, "cost")[-1]
    return {"L": loss, "C": cost, "E": 1.0 - scalar_values(run, "test_acc")[-1], "reg": cost - loss}


def first_step_grad_norm(run: Recorded) -> float:
    """‖∂L/∂W‖ over all weight layers at the first optimizer step (GradStats ``norm``)."""
    _, norms, _, _ = run.array("grad_stats", "norm")
    return float(np.sqrt((norms[0] ** 2).sum()))


def plateau_note(runs: list[Recorded], document_epochs: int = 200) -> str:
    """A caption sentence naming every run whose last-epoch loss is still near chance (> 0.9 ln 10), if any.

    ``document_epochs``: how long the document trains the item's nets (200 for Table 1, 1200 for Figure 2).

    Per run, not per mean: one collapsed seed pulls a mean far from the other seeds, and the reader must know.
    """
    stuck = []
    for run in sorted(runs, key=lambda r: (config(r)["kind"], config(r)["depth"], config(r)["seed"])):
        loss = scalar_values(run, "epoch_train_loss")[-1]
        if loss > PLATEAU:
            meta = config(run)
            stuck.append((meta["kind"], f"{NAMES[meta['kind']]} {meta['depth']} seed {meta['seed']} (L {loss:.2f})"))
    if not stuck:
        return ""
    steps = sorted({len(scalar_values(r, "train_loss")) for r in runs})
    text = (
        f"Disagreement with the document: after {'/'.join(map(str, steps))} SGD steps "
        f"{', '.join(label for _, label in stuck)} still {'has' if len(stuck) == 1 else 'have'} a loss near chance "
        f"(> 0.9·ln 10 = {PLATEAU:.2f}); means and sds include {'it' if len(stuck) == 1 else 'them'}, so at this scale "
        f"part of the comparison is between nets that have and have not left the initial loss plateau (the "
        f"document trains {document_epochs} epochs, ~{round(document_epochs * 391 / 1000)}k steps). "
    )
    kinds = {kind for kind, _ in stuck}
    if kinds - {"plain"}:
        text += (
            "HMWI (σ = 1/S) makes the residual branches and the classifier tiny, so the initial gradients are small "
            "(yt-tab1, column |g| step 0: total weight-gradient norm at the first step, GradStats). "
        )
    if "plain" in kinds:
        text += ("A PlnNet near chance has either not started to learn or collapsed to a constant prediction "
                 "(without normalisation a deep KWI net at learning rate 1e-2 can lose all its ReLUs). ")
    return text


def hmwi_note(depths_behind: list[int], runs: list[Recorded]) -> str:
    """Our best explanation when ResNets end above PlnNets (empty when ``depths_behind`` is empty)."""
    if not depths_behind:
        return ""
    steps = max(len(scalar_values(r, "train_loss")) for r in runs)
    return (
        "Best explanation for the ResNets being behind: HMWI (σ = 1/S) starts them on the initial loss plateau "
        "(tiny residual branches and classifier; see |g| step 0), where they spend their first few hundred "
        f"steps while the KWI PlnNets start learning at once (yt-fig2); with {steps} steps instead of the "
        "document's ~78k they have not caught up. "
    )


def summary_rows(inputs: FigureInputs, kinds: tuple[str, ...], metrics: tuple[str, ...]) -> pd.DataFrame:
    """One row per (depth, kind): mean and sd over seeds of the final ``metrics``."""
    depths = sorted({config(r)["depth"] for r in inputs.runs["simplified_training"]})
    rows = []
    for depth in depths:
        for kind in kinds:
            runs = seed_runs(inputs, "simplified_training", kind=kind, depth=depth)
            finals = [final_metrics(r) for r in runs]
            row: dict[str, object] = {"depth": depth, "network": NAMES[kind], "seeds": len(runs),
                                      "lr": config(runs[0])["lr"]}
            for metric in metrics:
                mean, sd = mean_sd([f[metric] for f in finals])
                row[metric] = float(mean)
                row[f"{metric} sd"] = float(sd)
            row["|g| step 0"] = float(np.mean([first_step_grad_norm(r) for r in runs]))
            rows.append(row)
    return pd.DataFrame(rows)


def training_setup(runs: list[Recorded], scale: str, document_epochs: int = 200) -> str:
    """What the training used (learning rates, milestones, batch, λ) and the data, for captions.

    ``document_epochs``: how long the document trains the item's nets (200 for Table 1, 1200 for Figure 2).
    """
    first = config(runs[0])
    lrs = sorted({(config(r)["kind"], config(r)["depth"], config(r)["lr"]) for r in runs})
    exceptions = [f"{NAMES[k]} {d}: {lr:g}" for k, d, lr in lrs if lr != 1e-2]
    text = (
        f"SGD, momentum {first['momentum']:g}, batch {first['batch_size']}, learning rate 1e-2"
        + (f" ({', '.join(exceptions)})" if exceptions else "")
        + f" divided by 10 after epochs {', '.join(str(m) for m in first['milestones'])}; weight decay as the "
        f"penalty λ‖θ‖², λ = {first['weight_decay']:g}. {describe(runs, scale)}"
    )
    if first["dataset"] != "cifar10":
        text += (f" Substitution: the document trains on CIFAR-10 (32×32×3, {document_epochs} epochs, batch 128); here "
                 f"{first['dataset']} at {scale} scale with {first['n_train']} training images.")
    return text


def draw(inputs: FigureInputs, out_dir: Path) -> FigureOutput:
    table = summary_rows(inputs, ("plain", "residual"), ("L", "C", "E"))
    runs = inputs.runs["simplified_training"]
    depths = sorted(table["depth"].unique())
    loss = table.set_index(["network", "depth"])["L"]
    first, last = depths[0], depths[-1]
    plain_ratio = loss["PlnNet", last] / loss["PlnNet", first]
    res_ratio = loss["ResNet", last] / loss["ResNet", first]
    numbers = {
        f"PlnNet L({last})/L({first})": float(plain_ratio),
        f"ResNet L({last})/L({first})": float(res_ratio),
        **{f"{net} {d}: L / E": f"{loss[net, d]:.4g} / {table.set_index(['network', 'depth'])['E'][net, d]:.4g}"
           for net in ("PlnNet", "ResNet") for d in depths},
    }
    below = [d for d in depths if loss["ResNet", d] < loss["PlnNet", d]]
    above = [d for d in depths if d not in below]
    comparison = (
        f"ResNet L below PlnNet L at {'every depth' if not above else 'depths ' + ', '.join(map(str, below))}"
        + (f", above at {', '.join(map(str, above))} (document: below at every depth)" if above else "")
        + f"; the PlnNet degrades {'more' if plain_ratio > res_ratio else 'less'} than the ResNet. "
    )
    caption = (
        f"Training loss L (mean over the last epoch's mini-batches), cost C = L + λ‖θ‖² and test error E after "
        f"training, mean and sd over seeds. Degradation L({last})/L({first}): PlnNet {plain_ratio:.2f}, ResNet "
        f"{res_ratio:.2f} (document: 6.85 and 1.73). {comparison}"
        + hmwi_note(above, runs)
        + plateau_note([r for r in runs if config(r)["kind"] != "dominant"])
        + training_setup(runs, inputs.scale)
    )
    caption = chance_check(runs).annotate(caption, numbers)
    return FigureOutput(save_table(table, out_dir, ID, caption, inputs), caption, numbers, table=table)
