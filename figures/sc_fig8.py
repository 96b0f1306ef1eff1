"""sc-fig8: accuracy vs SC weight (0.1 / 0.2 / 0.5), several backbone depths (document 000, section 5.4,
Figure 8)."""

from __future__ import annotations

from pathlib import Path

from analyses.runner import preset
from figures.base import FigureInputs, FigureOutput, Recorded
from figures.sc_common import accuracy_bars, main_runs, sc_resnet_defaults

ID = "sc-fig8"
ANALYSES = ("sc_resnet",)
NEEDS = {"sc_resnet": ("scalars/test_acc",)}
TRAINED_NETS = True
CLAIM = "All SC models do best with SC weight 0.2; weight 0.5 loses more than 0.1 (document 000, Figure 8)."


def series(inputs: FigureInputs) -> tuple[list[int], dict[str, list[list[Recorded]]]]:
    """Depths and the runs of each bar series (ResNet, then each SC weight) and depth."""
    defaults = sc_resnet_defaults(inputs.scale)
    weights = sorted(set(preset("sc_resnet", inputs.scale).weights) | {defaults["sc_weight"]})
    depths = list(defaults["ablation_depths"])
    out: dict[str, list[list[Recorded]]] = {"ResNet": [], **{f"SC weight {w:g}": [] for w in weights}}
    for depth in depths:
        out["ResNet"].append(main_runs(inputs, depth, False))
        for w in weights:
            runs = inputs.of(
                "sc_resnet", depth=depth, sc=True, sc_rears="stage_end", sc_weight=w, batch_size=defaults["batch_size"]
            )
            out[f"SC weight {w:g}"].append(runs)
    return depths, out


def draw(inputs: FigureInputs, out_dir: Path) -> FigureOutput:
    depths, bars = series(inputs)
    description = (
        "Final test accuracy, mean ± sd over seeds, of SCResNet (single SC per stage) with SC weights "
        + ", ".join(k.split()[-1] for k in bars if k != "ResNet")
        + " and of ResNet. "
    )
    title = "SC weight (document 000, Figure 8)"
    return accuracy_bars(inputs, out_dir, ID, title, description, (depths, bars))
