"""What the items of document 003 (concatenative skips) share: the MLP tables (yw-tab1–3: the tuned weight
decay, the document's rows, the substitution and protocol sentences) and the CNN tables (yw-tab4–5: rows, the
skip − vanilla difference, the protocol). Not a figure module; imports only :mod:`figures.base` of ``figures/``."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from figures.base import config, describe, final_scalar, scalar_values, values_of

MLP_NAMES = {"skip": "skip", "vanilla": "vanilla", "skipstar": "skip*"}
# document row -> (train 3-l, val 3-l, train 4-l, val 4-l), per table.
MLP_DOCUMENT = {
    "yw-tab1": {"skip": (91.0, 89.0, 91.6, 89.1), "vanilla": (90.4, 88.6, 92.0, 90.0)},
    "yw-tab2": {"skipstar": (91.2, 89.4, 92.5, 90.9)},
    "yw-tab3": {
        "skip": (64.9, 64.1, 67.8, 66.6),
        "vanilla": (64.0, 63.2, 66.5, 65.8),
        "skipstar": (64.9, 64.2, 68.0, 66.7),
    },
}


def tuned(runs: list, variant: str, layers: int) -> dict:
    """The weight decay with the best final validation accuracy (mean over seeds; ties: the smaller decay)."""
    chosen = [r for r in runs if config(r)["variant"] == variant and config(r)["layers"] == layers]
    scores = {}
    for wd in values_of(chosen, "weight_decay"):
        group = [r for r in chosen if config(r)["weight_decay"] == wd]
        scores[wd] = (
            100 * float(np.mean([final_scalar(r, "test_acc") for r in group])),
            100 * float(np.mean([final_scalar(r, "train_acc") for r in group])),
            len(group),
        )
    best = max(scores, key=lambda wd: scores[wd][0])
    val, train, seeds = scores[best]
    return {
        "train": train,
        "val": val,
        "wd": best,
        "seeds": seeds,
        "grid": scores,
        "epochs": config(chosen[0])["total_epochs"],
    }


def mlp_table(runs: list, variants: tuple[str, ...], item_id: str) -> tuple[pd.DataFrame, dict, str]:
    """The document's layout (rows: variants then the document's rows) with the tuned weight decays.

    Returns the table, key numbers and the grid sentence for the caption.
    """
    rows, numbers, grid = [], {}, []
    for variant in variants:
        row: dict[str, object] = {"net": f"{MLP_NAMES[variant]} (ours)"}
        for layers in values_of(runs, "layers"):
            result = tuned(runs, variant, layers)
            row[f"train({layers}-l)"] = result["train"]
            row[f"val({layers}-l)"] = result["val"]
            row[f"weight decay ({layers}-l)"] = result["wd"]
            row[f"epochs ({layers}-l)"] = result["epochs"]
            numbers[f"{MLP_NAMES[variant]} {layers}-layer: val %"] = result["val"]
            numbers[f"{MLP_NAMES[variant]} {layers}-layer: train %"] = result["train"]
            grid.append(
                f"{MLP_NAMES[variant]} {layers}-l: "
                + ", ".join(f"wd {wd:g} → val {v[0]:.2f}" for wd, v in result["grid"].items())
            )
        rows.append(row)
    for variant, values in MLP_DOCUMENT[item_id].items():
        if variant in variants:
            rows.append(
                {
                    "net": f"{MLP_NAMES[variant]} (document)",
                    "train(3-l)": values[0],
                    "val(3-l)": values[1],
                    "train(4-l)": values[2],
                    "val(4-l)": values[3],
                }
            )
    table = pd.DataFrame(rows)
    return table.astype(object).where(table.notna(), "—"), numbers, "; ".join(grid)


# the MLP's widths (``arch``) -> the document's dataset for them, with its widths
DOCUMENT_DATA = {
    "emnist": ("emnist_letters", "EMNIST letters (26 classes)", "128-256-[256]"),
    "cifar": ("cifar10", "CIFAR-10 (32×32×3, 10 classes)", "512-256-[256]"),
}


def data_note(runs: list) -> str:
    """Empty when the runs used the document's dataset for their widths, else the substitution sentence."""
    first = config(runs[0])
    dataset, name, widths = DOCUMENT_DATA[first["arch"]]
    if first["dataset"] == dataset:
        return ""
    return (
        f"Substitution: {first['dataset']} (10 digit classes) stands in for the document's "
        f"{name}, which is not available here; the document's hidden widths {widths}, the data's input size and "
        "classes. "
    )


def caption_for(runs: list, scale: str, grid: str) -> str:
    """What the MLP tables say about data, protocol, tuning grid and scale."""
    first = config(runs[0])
    return (
        f"{data_note(runs)}Train = running accuracy over the last epoch's mini-batches, val = accuracy on "
        f"{first['n_val']} training images held out as validation split, both after the last epoch, in %. "
        f"SGD η = {first['lr']}, momentum {first['momentum']}, batch {first['batch_size']}; skip and vanilla "
        f"{first['epochs']} epochs, skip* {first['epochs']} epochs with skips disabled then {first['epochs']} with "
        "skips enabled (skip weights started at zero). The L2 weight decay was tuned on the validation split "
        f"as in the document, grid {values_of(runs, 'weight_decay')}; the table shows each net at its best "
        f"value (validation accuracy per grid value: {grid}). {describe(runs, scale)}"
    )


CNN_DOCUMENT = {"skip": (84.2, 83.5), "vanilla": (81.7, 80.9), "reinforced": (84.9, 84.1)}
CNN_NAMES = {"skip": "skip", "vanilla": "vanilla", "reinforced": "vanilla* (reinforced)"}


def cnn_rows(runs: list, variants: tuple[str, ...]) -> tuple[list[dict], dict]:
    """Rows (ours, then the document's) and key numbers for ``variants``: final train/val accuracy in %."""
    rows, numbers = [], {}
    for variant in variants:
        chosen = [r for r in runs if config(r)["variant"] == variant]
        train = 100 * float(np.mean([final_scalar(r, "train_acc") for r in chosen]))
        val = 100 * float(np.mean([final_scalar(r, "test_acc") for r in chosen]))
        parameters = chosen[0].meta["model"]["parameters"]
        rows.append(
            {
                "net": f"{CNN_NAMES[variant]} (ours)",
                "train": train,
                "val": val,
                "parameters": parameters,
                "runs": len(chosen),
            }
        )
        numbers[f"{CNN_NAMES[variant]}: val %"] = val
        numbers[f"{CNN_NAMES[variant]}: train %"] = train
    rows += [{"net": f"{CNN_NAMES[v]} (document)", "train": CNN_DOCUMENT[v][0], "val": CNN_DOCUMENT[v][1]}
             for v in variants]
    return rows, numbers


def difference_note(numbers: dict, better: str, worse: str) -> str:
    """'<better> − <worse>: ±x points of validation accuracy (document ±y)' from :func:`cnn_rows` numbers."""
    ours = numbers[f"{CNN_NAMES[better]}: val %"] - numbers[f"{CNN_NAMES[worse]}: val %"]
    document = CNN_DOCUMENT[better][1] - CNN_DOCUMENT[worse][1]
    agrees = "same sign as" if ours * document > 0 else "opposite sign to"
    return (f"{CNN_NAMES[better]} − {CNN_NAMES[worse]}: {ours:+.2f} points of validation accuracy ({agrees} the "
            f"document's {document:+.1f}). ")


LATE_FRACTION = 0.5
"""A net is *still near the initial plateau* after epoch 1 when its mean validation accuracy then is less than this
fraction of the way from chance to the best net's: it has spent part of its first epoch learning nothing, so at the
end it has trained for less than the others."""


def epoch_accuracies(runs: list, variants: Sequence[str]) -> dict[str, np.ndarray]:
    """Validation accuracy (%) of each variant after each epoch ``[seed, epoch]`` (seeds in order), as recorded
    (the per-epoch ``test_acc`` scalar)."""
    return {
        variant: 100 * np.array([scalar_values(r, "test_acc") for r in sorted(
            (r for r in runs if config(r)["variant"] == variant), key=lambda r: config(r)["seed"])])
        for variant in variants
    }


def convergence_note(accs: dict[str, np.ndarray], better: str, worse: str, chance: float) -> str:
    """What the per-epoch validation accuracies ``accs`` (variant -> ``[seed, epoch]``, %) say about the difference
    ``better`` − ``worse`` of the final means; ``chance`` in %.

    Lists each net's mean accuracy after every epoch (and its per-seed range after epoch 1); says UNCONVERGED when
    a net of the pair gained more in its last epoch than the difference itself (one more epoch could change its
    sign), and names the nets still near the initial plateau after epoch 1 (:data:`LATE_FRACTION`), for which the
    difference mostly measures which net leaves the plateau first.
    """

    def spread(values: np.ndarray) -> str:
        low, high = values.min(), values.max()
        return f"{low:.1f} %" if low == high else f"{low:.1f}–{high:.1f} %"

    means = {v: a.mean(axis=0) for v, a in accs.items()}
    text = "Validation accuracy after each epoch, mean over seeds (after epoch 1: range over seeds): " + "; ".join(
        f"{CNN_NAMES[v]} {', '.join(f'{m:.1f}' for m in means[v])} % ({spread(a[:, 0])})" for v, a in accs.items()
    ) + ". "
    epochs = len(means[better])
    if epochs < 2:
        return text + f"With {epochs} epoch, whether the nets have levelled off cannot be read from these runs. "
    difference = means[better][-1] - means[worse][-1]
    gains = {v: means[v][-1] - means[v][-2] for v in (better, worse)}
    still = [v for v, gain in gains.items() if gain > abs(difference)]
    if still:
        text += (
            f"UNCONVERGED: in the last epoch ({epochs}) "
            + " and ".join(f"{CNN_NAMES[v]} still gained {gains[v]:+.1f} points" for v in still)
            + f", more than the {difference:+.2f}-point difference {CNN_NAMES[better]} − {CNN_NAMES[worse]}, so "
            "that difference is between nets still learning, not their end points. "
        )
    else:
        text += (f"In the last epoch ({epochs}) every net gained less than the {difference:+.2f}-point difference "
                 f"({', '.join(f'{CNN_NAMES[v]} {g:+.2f}' for v, g in gains.items())}). ")
    first = {v: m[0] for v, m in means.items()}
    leader = max(first, key=first.get)
    late = [v for v in (better, worse) if first[v] < chance + LATE_FRACTION * (first[leader] - chance)]
    if late:
        text += (
            " and ".join(CNN_NAMES[v] for v in late)
            + f" {'was' if len(late) == 1 else 'were'} still near the initial plateau after epoch 1 ("
            + "; ".join(spread(accs[v][:, 0]) for v in late)
            + f"; {CNN_NAMES[leader]} {spread(accs[leader][:, 0])}): the difference mostly measures which net leaves "
            f"the plateau first, not what the nets reach once trained. "
        )
    return text


def cnn_caption(runs: list, scale: str) -> str:
    """Data, protocol and scale of the CNN tables."""
    first = config(runs[0])
    data = (
        ""
        if first["dataset"] == "cifar10"
        else (
            f"Data: {first['dataset']} (1 channel) stands in for the document's CIFAR-10, which is not available "
            "here; the held-out split is its test subset. "
        )
    )
    return (
        f"{data}Train = running accuracy over the last epoch's mini-batches, "
        "val = accuracy on the held-out split "
        f"after the last epoch, in %, mean over runs. SGD η = {first['lr']}, momentum {first['momentum']}, batch "
        f"{first['batch_size']}, {first['epochs']} epochs (the document gives no optimiser settings). "
        f"{describe(runs, scale)}"
    )
