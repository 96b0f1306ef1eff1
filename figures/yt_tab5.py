"""yt-tab5: ResNet vs the dominant-path net T′ (kernels I + R, diagonal over channels): training loss and test
error, depths 20/32/44 (document 004, appendix D.3, Table 5)."""

from __future__ import annotations

from pathlib import Path

from figures.base import FigureInputs, FigureOutput, chance_check, config, save_table
from figures.yt_common import plateau_note, summary_rows, training_setup

ID = "yt-tab5"
ANALYSES = ("simplified_training",)
NEEDS = {"simplified_training": ("scalars/epoch_train_loss", "scalars/test_acc", "grad_stats/norm")}
TRAINED_NETS = True
CLAIM = (
    "Nets with only the dominant paths (T′) stay far above chance (E ≈ 0.31 vs 0.9 for guessing on CIFAR-10, "
    "> 76 % of the ResNet's accuracy) and do not degrade with depth (L(44)/L(20) = 1.001) (document 004, "
    "appendix D.3, Table 5)."
)


def draw(inputs: FigureInputs, out_dir: Path) -> FigureOutput:
    table = summary_rows(inputs, ("residual", "dominant"), ("L", "E"))
    runs = inputs.runs["simplified_training"]
    indexed = table.set_index(["network", "depth"])
    depths = sorted(table["depth"].unique())
    first, last = depths[0], depths[-1]
    accuracy_share = {d: (1 - indexed["E"]["T′ net", d]) / (1 - indexed["E"]["ResNet", d]) for d in depths}
    degradation = indexed["L"]["T′ net", last] / indexed["L"]["T′ net", first]
    numbers = {
        **{f"T′ net {d}: L / E": f"{indexed['L']['T′ net', d]:.4g} / {indexed['E']['T′ net', d]:.4g}" for d in depths},
        **{f"accuracy T′/ResNet, depth {d}": float(v) for d, v in accuracy_share.items()},
        f"T′ net L({last})/L({first})": float(degradation),
    }
    shares = ", ".join(f"{d}: {v:.0%}" for d, v in accuracy_share.items())
    caption = (
        f"Training loss L and test error E after training, ResNet (HMWI) vs T′ net (every block kernel restricted "
        f"to the dominant paths (d, d mod C) with 1 added at their centre taps; HMWI), mean and sd over seeds; "
        f"chance error 0.9. Accuracy of T′ relative to the ResNet: {shares} (document: ~77 %); T′ net "
        f"L({last})/L({first}) = {degradation:.3g} (document: 1.001). The penalty λ‖θ‖² covers the whole kernel "
        f"I + R of T′. " + plateau_note([r for r in runs if config(r)["kind"] != "plain"])
        + training_setup(runs, inputs.scale)
    )
    caption = chance_check(runs).annotate(caption, numbers)
    return FigureOutput(save_table(table, out_dir, ID, caption, inputs), caption, numbers, table=table)
