"""yt-tab3: statistics of the plain-network weights p (KWI plain net) and t = T(r) (HMWI ResNet written as a
plain net) before and after training, depth 32: mean, sd, L1 mass of all weights, of |w| ≥ 0.25 and of the ID
entries (document 004, appendix C, Table 3)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from figures.base import FigureInputs, FigureOutput, chance_check, config, save_table
from figures.yt_common import training_setup, weight_vectors

ID = "yt-tab3"
ANALYSES = ("simplified_training",)
NEEDS = {"simplified_training": ("scalars/epoch_train_loss",)}
TRAINED_NETS = True
CLAIM = (
    "ID entries dominate the large-weight mass of t: after training they still hold > 76 % (1000/1300) of the "
    "mass of |t| ≥ 0.25, while in p they hold ~10 % (72/700); training moves weights little relative to 1 "
    "(document 004, appendix C, Table 3)."
)
LARGE = 0.25


def statistics(w: np.ndarray, ids: np.ndarray) -> dict[str, float]:
    """Mean, sd, L1 masses (all, |w| ≥ 0.25, ID entries), the ID share of the large mass, ID mean, |w| > 0.7."""
    w = w.astype(np.float64)
    large = np.abs(w) >= LARGE
    mass_large = np.abs(w[large]).sum()
    return {
        "mean": w.mean(),
        "sd": w.std(),
        "mass: all weights": np.abs(w).sum(),
        "mass: |w| ≥ 0.25": mass_large,
        "mass: ID entries": np.abs(w[ids]).sum(),
        "ID share of |w| ≥ 0.25 mass": np.abs(w[ids & large]).sum() / mass_large if mass_large > 0 else np.nan,
        "mean of ID entries": w[ids].mean(),
        "count |w| > 0.7": float((np.abs(w) > 0.7).sum()),
    }


def draw(inputs: FigureInputs, out_dir: Path) -> FigureOutput:
    vectors, id_p, id_t, chosen = weight_vectors(inputs)
    masks = {"p0": id_p, "p_end": id_p, "t0": id_t, "t_end": id_t}
    stats = {name: statistics(w, masks[name]) for name, w in vectors.items()}
    table = pd.DataFrame({"statistic": list(stats["p0"]), **{n: [float(v) for v in s.values()]
                                                            for n, s in stats.items()}})
    share = {n: s["ID share of |w| ≥ 0.25 mass"] for n, s in stats.items()}
    numbers = {f"ID share of |w| ≥ 0.25 mass, {n}": float(v) for n, v in share.items()}
    numbers["mean ID entry t0 / t_end"] = f"{stats['t0']['mean of ID entries']:.4f} / " \
                                          f"{stats['t_end']['mean of ID entries']:.4f}"
    cfg = config(chosen[0])
    caption = (
        f"Weights (biases excluded) of the depth-{cfg['depth']} plain net p (KWI) and of the ResNet written as the "
        f"plain net t = T(r) (HMWI), seed {cfg['seed']}, before (p0, t0) and after training (p_end, t_end, "
        f"{cfg['epochs']} epochs). Mass = L1 norm; population sd. The ID entries hold "
        f"{share['t_end']:.0%} of the |w| ≥ 0.25 mass of t_end (document: 76 %) and {share['p_end']:.0%} of "
        f"p_end's (document: 10 %). {len(vectors['p0'])} weights, {int(id_t.sum())} ID entries"
        f"{'' if cfg['dataset'] == 'cifar10' else ' (1 input channel: the stem has fewer weights than on CIFAR-10)'}. "
        + training_setup(chosen, inputs.scale)
    )
    caption = chance_check(chosen).annotate(caption, numbers)
    return FigureOutput(save_table(table, out_dir, ID, caption, inputs), caption, numbers, table=table)
