"""sc-fig7: accuracy with a single vs multiple short circuits per stage, several backbone depths (document 000,
section 5.3, Figure 7)."""

from __future__ import annotations

from pathlib import Path

from figures.base import FigureInputs, FigureOutput, Recorded
from figures.sc_common import accuracy_bars, main_runs, sc_resnet_defaults

ID = "sc-fig7"
ANALYSES = ("sc_resnet",)
NEEDS = {"sc_resnet": ("scalars/test_acc",)}
TRAINED_NETS = True
CLAIM = (
    "Multiple SC connections do not always help: they hurt SCResNet20, barely change SCResNet32, and help the "
    "deeper models more than a single SC (document 000, Figure 7)."
)


def series(inputs: FigureInputs) -> tuple[list[int], dict[str, list[list[Recorded]]]]:
    """Depths and the runs of each bar series and depth."""
    defaults = sc_resnet_defaults(inputs.scale)
    depths = list(defaults["ablation_depths"])
    out: dict[str, list[list[Recorded]]] = {"ResNet": [], "SC single (stage end)": [], "SC multiple (every block)": []}
    for depth in depths:
        multiple = inputs.of(
            "sc_resnet",
            depth=depth,
            sc=True,
            sc_rears="every_block",
            sc_weight=defaults["sc_weight"],
            batch_size=defaults["batch_size"],
        )
        groups = (main_runs(inputs, depth, False), main_runs(inputs, depth, True), multiple)
        for label, runs in zip(out, groups, strict=True):
            out[label].append(runs)
    return depths, out


def draw(inputs: FigureInputs, out_dir: Path) -> FigureOutput:
    description = (
        "Final test accuracy, mean ± sd over seeds: ResNet, SCResNet with one rear per stage (single SC) and with "
        "every block's second convolution as a rear (multiple SC), SC weight and batch as in sc-tab2. "
    )
    title = "Single vs multiple short circuits (document 000, Figure 7)"
    return accuracy_bars(inputs, out_dir, ID, title, description, series(inputs))
