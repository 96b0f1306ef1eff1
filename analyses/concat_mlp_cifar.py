"""Document 003's CIFAR-10 MLP (512-256-[256]-10, Table 3): :mod:`analyses.concat_mlp` on ``cifar10``.

CIFAR-10 is not shipped here. ``smoke`` and ``quick`` run it when ``--data-dir`` holds the files and
otherwise leave a not-run marker (:mod:`analyses.optional_data`), so the table says it was not run; the
``paper`` preset requires the data and fails with the data module's message.
"""

from __future__ import annotations

from dataclasses import replace

from analyses import concat_mlp
from analyses.concat_mlp import execute

__all__ = ["Config", "execute", "runs"]


class Config(concat_mlp.Config):
    """:class:`analyses.concat_mlp.Config` with CIFAR-10 presets and the CIFAR net's widths."""

    @classmethod
    def smoke(cls) -> concat_mlp.Config:
        return replace(concat_mlp.Config.smoke(), dataset="cifar10", arch="cifar", n_train=512, optional_data=True)

    @classmethod
    def quick(cls) -> concat_mlp.Config:
        return replace(
            concat_mlp.Config.quick(), dataset="cifar10", arch="cifar", n_train=8000, n_test=2000, optional_data=True
        )

    @classmethod
    def paper(cls) -> concat_mlp.Config:
        return replace(concat_mlp.Config.paper(), dataset="cifar10", arch="cifar", n_val=5000)


def runs(config: concat_mlp.Config) -> list[dict]:
    """The runs of :func:`analyses.concat_mlp.runs`, labelled with this analysis."""
    return [{**params, "analysis": "concat_mlp_cifar"} for params in concat_mlp.runs(config)]
