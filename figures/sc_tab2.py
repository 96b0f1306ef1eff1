"""sc-tab2: test accuracy of ResNet-v1 vs SCResNet by depth, mean ± sd over seeds (document 000, Table 2)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from figures.base import FigureInputs, FigureOutput, chance_check, config, describe, save_table
from figures.sc_common import final_accuracies, main_runs, mean_sd, sc_resnet_defaults

ID = "sc-tab2"
ANALYSES = ("sc_resnet",)
NEEDS = {"sc_resnet": ("scalars/test_acc",)}
TRAINED_NETS = True
CLAIM = (
    "SCResNet beats ResNet-v1 at every depth on CIFAR-10 (e.g. 91.25 → 91.81 at depth 20, 93.03 → 93.81 at 56, "
    "92.07 → 94.46 at 1202); the gain grows with depth (document 000, Table 2)."
)
DOCUMENT = {
    20: (91.25, 91.81),
    32: (92.49, 92.94),
    44: (92.83, 93.29),
    56: (93.03, 93.81),
    110: (93.39, 94.13),
    1202: (92.07, 94.46),
}

QUICK_NOTE = (
    "; at this scale compare each difference with the seed-to-seed sd before reading it as the document's effect"
)


def draw(inputs: FigureInputs, out_dir: Path) -> FigureOutput:
    defaults = sc_resnet_defaults(inputs.scale)
    rows, used = [], []
    for depth in defaults["depths"]:
        base, sc = main_runs(inputs, depth, False), main_runs(inputs, depth, True)
        used += base + sc
        (b_mean, b_sd), (s_mean, s_sd) = mean_sd(final_accuracies(base)), mean_sd(final_accuracies(sc))
        doc = DOCUMENT.get(depth, (float("nan"), float("nan")))
        rows.append(
            {
                "depth": depth,
                "ResNet acc (%)": round(b_mean, 2),
                "ResNet sd": round(b_sd, 2),
                "SCResNet acc (%)": round(s_mean, 2),
                "SCResNet sd": round(s_sd, 2),
                "SC − ResNet": round(s_mean - b_mean, 2),
                "seeds": len(sc),
                "document ResNet": doc[0],
                "document SCResNet": doc[1],
            }
        )
    table = pd.DataFrame(rows)
    cfg = config(used[0])
    wins = int((table["SC − ResNet"] > 0).sum())
    caption = (
        f"Final test accuracy (mean ± sd over seeds) of ResNet-v1 and SCResNet (SC weight {defaults['sc_weight']}, "
        f"gap 2, single SC per stage), batch {defaults['batch_size']}, SGD lr {cfg['lr']} momentum {cfg['momentum']}, "
        f"{cfg['n_train'] or 'all'} training samples. SCResNet is ahead at {wins} of {len(table)} depths "
        f"(differences {', '.join(f'{d:+.2f}' for d in table['SC − ResNet'])} points"
        f"{'' if inputs.scale == 'paper' else QUICK_NOTE}). "
        f"Document columns: its CIFAR-10 numbers for reference. {describe(used, inputs.scale)}"
    )
    numbers = {
        f"depth {r['depth']} ResNet / SCResNet": f"{r['ResNet acc (%)']:.2f}±{r['ResNet sd']:.2f} / "
        f"{r['SCResNet acc (%)']:.2f}±{r['SCResNet sd']:.2f}"
        for r in rows
    }
    caption = chance_check(used).annotate(caption, numbers)
    return FigureOutput(save_table(table, out_dir, ID, caption, inputs), caption, numbers, table=table)
