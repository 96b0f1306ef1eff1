"""Document 003's CIFAR-10 MLP (512-256-[256]-10, Table 3): :mod:`analyses.concat_mlp` with the CIFAR net's widths.

``paper`` trains on CIFAR-10 as the document did and fails with the data module's one-line message when the
files are not under ``--data-dir``. CIFAR-10 cannot be downloaded on the machines this project runs on, so
``smoke`` (embedded 8×8 digits) and ``quick`` (the 8 000-image MNIST subset, as :mod:`analyses.concat_mlp`'s
quick preset) train the same 512-256-[256] nets on digit images instead — always, whether or not CIFAR-10 is
present, so a quick result never depends on which files happen to be there. ``yw-tab3`` says so in its
caption.
"""

from __future__ import annotations

from dataclasses import replace

from analyses import concat_mlp
from analyses.concat_mlp import execute

__all__ = ["Config", "execute", "runs"]


class Config(concat_mlp.Config):
    """:class:`analyses.concat_mlp.Config` with the CIFAR net's widths (and CIFAR-10 data at paper scale)."""

    @classmethod
    def smoke(cls) -> concat_mlp.Config:
        return replace(concat_mlp.Config.smoke(), arch="cifar")

    @classmethod
    def quick(cls) -> concat_mlp.Config:
        return replace(concat_mlp.Config.quick(), arch="cifar")

    @classmethod
    def medium(cls) -> concat_mlp.Config:
        """= quick: yw-tab3 (skip* best, skip ≈ vanilla) shows at quick."""
        return cls.quick()

    @classmethod
    def paper(cls) -> concat_mlp.Config:
        return replace(concat_mlp.Config.paper(), dataset="cifar10", arch="cifar", n_val=5000)


def runs(config: concat_mlp.Config) -> list[dict]:
    """The runs of :func:`analyses.concat_mlp.runs`, labelled with this analysis."""
    return [{**params, "analysis": "concat_mlp_cifar"} for params in concat_mlp.runs(config)]
