"""yt-tab1: training loss L, cost C and test error E of simplified PlnNets and ResNets, depths 20/32/44
(document 004, appendix A, Table 1)."""

from __future__ import annotations

from pathlib import Path

from figures.base import FigureInputs, FigureOutput, chance_check, config, save_table
from figures.yt_common import hmwi_note, plateau_note, summary_rows, training_setup

ID = "yt-tab1"
ANALYSES = ("simplified_training",)
NEEDS = {"simplified_training": ("scalars/epoch_train_loss", "scalars/cost", "scalars/test_acc", "grad_stats/norm")}
TRAINED_NETS = True
CLAIM = (
    "ResNets have smaller L and E than PlnNets of equal depth; PlnNets degrade with depth (L × 6.85 from depth "
    "20 to 44) much more than ResNets (× 1.73) (document 004, appendix A, Table 1)."
)
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
