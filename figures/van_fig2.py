"""van-fig2: accuracy vs depth 8n+2 (ResNet, VAN, VAN(λ=0), plain) and the train/test error of VAN and plain with
the mean α-residual on a right axis (document 002, Figure 2: CIFAR-10, curves at 26 layers)."""

from __future__ import annotations

from pathlib import Path

from figures.base import FigureInputs, FigureOutput
from figures.van_common import draw_preact

ID = "van-fig2"
ANALYSES = ("van_preact",)
NEEDS = {"van_preact": ("scalars/test_acc", "scalars/train_acc", "scalars/epoch")}
TRAINED_NETS = True
CLAIM = (
    "The α-residual (1/L)Σ(1−α)² falls to 0 during training (skips fully removed, at about the 120th "
    "iteration on CIFAR-10), and VAN's train and test errors stay at or below the plain net's; plain nets "
    "degrade with depth far more than VAN (document 002, 4.2, Figure 2)."
)


def draw(inputs: FigureInputs, out_dir: Path) -> FigureOutput:
    return draw_preact(inputs, out_dir, ID, "cifar10", 26, 2)
