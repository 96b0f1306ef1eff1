"""What the items of document 004 (Yu & Tomasi) share: the runs of one kind and depth in seed order, final
L, C, E, mean ± sd over seeds, the plateau and HMWI notes and the training setup of the Table-1 nets (yt-tab1,
yt-tab3–5, yt-fig2, yt-fig3, yt-fig7, yt-fig9, yt-fig12), the equivalent pairs (yt-tab2, yt-fig6), the saved
weights (yt-tab3, yt-fig7) and probe records from runs or results (yt-fig3, yt-fig10, yt-fig12). Not a figure
module; imports only :mod:`figures.base` of ``figures/``."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analyses.simplified_training import weights_path
from figures.base import FigureInputs, Recorded, config, describe, open_recorded, scalar_values
from gradlens.results import Result

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


def pair(inputs: FigureInputs, depth: int, seed: int) -> tuple[Recorded, Recorded]:
    """The plain and the residual run of one equivalent pair."""
    return (inputs.one("equivalence", kind="plain", depth=depth, seed=seed),
            inputs.one("equivalence", kind="residual", depth=depth, seed=seed))


def step_losses(run: Recorded) -> np.ndarray:
    """The per-step mini-batch training loss (logged every step)."""
    return scalar_values(run, "train_loss")


def equivalence_setup(runs: list[Recorded], scale: str) -> str:
    """Training setup and data of the equivalence runs, for captions."""
    first = config(runs[0])
    text = (
        f"float64 on one CPU, SGD momentum {first['momentum']:g}, batch {first['batch_size']}, learning rate "
        f"{first['lr']:g} divided by 10 after epochs {', '.join(str(m) for m in first['milestones'])}, "
        f"λ = {first['weight_decay']:g}. {describe(runs, scale)}"
    )
    if first["dataset"] != "cifar10":
        text += (f" Substitution: the document trains on CIFAR-10 for 200 epochs; here {first['dataset']} at "
                 f"{scale} scale with {first['n_train']} training images.")
    return text


def weight_vectors(inputs: FigureInputs) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, list[Recorded]]:
    """``{"p0", "p_end", "t0", "t_end"}`` weights, the ID masks of p and t, and the two runs (first seed of
    the plain and the residual run that saved weights)."""
    runs = [r for r in inputs.runs["simplified_training"] if config(r).get("save_weights")]
    if not runs:
        raise ValueError("no simplified_training run saved weights; the sweep's weights_depth is not trained")
    depth = config(runs[0])["depth"]
    seed = min(config(r)["seed"] for r in runs)
    chosen = [seed_runs(inputs, "simplified_training", kind=kind, depth=depth, seed=seed)[0]
              for kind in ("plain", "residual")]
    plain, residual = (open_recorded(weights_path(r.path)) for r in chosen)
    vectors = {"p0": plain["init"], "p_end": plain["final"], "t0": residual["init"], "t_end": residual["final"]}
    return vectors, plain["id_entry"], residual["id_entry"], chosen


def probe_record(recorded: Recorded, probe: str, quantity: str) -> tuple[np.ndarray, np.ndarray, list[str] | None]:
    """``(steps, values [step, ...], layer names or None)`` of one recorded quantity: from a training run (the
    simplified nets, ``simplified_training`` runs) or from a computed result holding ``<probe>/<quantity>``,
    ``<probe>/steps`` and ``<probe>/layers`` (the fully-fledged nets of ``noise_stability``)."""
    if isinstance(recorded, Result):
        layers = recorded.arrays.get(f"{probe}/layers")
        return (recorded[f"{probe}/steps"], recorded[f"{probe}/{quantity}"],
                None if layers is None else [str(name) for name in layers])
    steps, values, _, labels = recorded.array(probe, quantity)
    return steps, values, labels.get("layer")


def noise(run: Recorded) -> dict:
    """The noise-probe settings of a run (``probe_size``, ``cushion_layer``, ``hist_epochs``, ``hist_every``):
    ``params["noise"]`` of a simplified_training run, the configuration itself for a noise_stability result."""
    return config(run).get("noise", config(run))
