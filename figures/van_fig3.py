"""van-fig3: as van-fig2 for CIFAR-100 (depths 10..34, curves at 18 layers) (document 002, Figure 3)."""

from __future__ import annotations

from pathlib import Path

from figures.base import FigureInputs, FigureOutput
from figures.van_common import draw_preact

ID = "van-fig3"
ANALYSES = ("van_preact",)
NEEDS = {"van_preact": ("scalars/test_acc", "scalars/train_acc", "scalars/epoch")}
TRAINED_NETS = True
CLAIM = (
    "On CIFAR-100 both VAN and plain nets fall beyond some depth (about 20 layers for plain, 30 for VAN); "
    "introducing and then removing the skips improves the generalisation error at 18 layers "
    "(document 002, 4.2, Figure 3)."
)


def draw(inputs: FigureInputs, out_dir: Path) -> FigureOutput:
    return draw_preact(inputs, out_dir, ID, "cifar100", 18, 3)
