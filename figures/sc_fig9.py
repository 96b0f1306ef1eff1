"""sc-fig9: SCResNet accuracy vs training batch size, several backbone depths (document 000, section 5.4,
Figure 9)."""

from __future__ import annotations

from pathlib import Path

from analyses.runner import preset
from figures.base import FigureInputs, FigureOutput, Recorded
from figures.sc_common import accuracy_bars, sc_resnet_defaults

ID = "sc-fig9"
ANALYSES = ("sc_resnet",)
NEEDS = {"sc_resnet": ("scalars/test_acc",)}
TRAINED_NETS = True
CLAIM = (
    "Batch size 32 beats the others in most settings; accuracy falls as the batch grows (fewer updates per "
    "epoch) (document 000, Figure 9)."
)


def series(inputs: FigureInputs) -> tuple[list[int], dict[str, list[list[Recorded]]]]:
    """Depths and the runs of each batch size and depth."""
    defaults = sc_resnet_defaults(inputs.scale)
    sizes = sorted(set(preset("sc_resnet", inputs.scale).batch_sizes) | {defaults["batch_size"]})
    depths = list(defaults["ablation_depths"])
    out: dict[str, list[list[Recorded]]] = {f"batch {b}": [] for b in sizes}
    for depth in depths:
        for b in sizes:
            runs = inputs.of(
                "sc_resnet", depth=depth, sc=True, sc_rears="stage_end", sc_weight=defaults["sc_weight"], batch_size=b
            )
            out[f"batch {b}"].append(runs)
    return depths, out


def draw(inputs: FigureInputs, out_dir: Path) -> FigureOutput:
    description = (
        "Final test accuracy, mean ± sd over seeds, of SCResNet (SC weight as in sc-tab2, single SC per stage) "
        "trained with each batch size for the same number of epochs and the same learning rate (so larger "
        "batches take fewer steps). "
    )
    title = "SCResNet vs batch size (document 000, Figure 9)"
    return accuracy_bars(inputs, out_dir, ID, title, description, series(inputs))
