"""The Fashion-MNIST half of document 002's Figure 1: :mod:`analyses.van_thin` on ``fashion_mnist``.

Fashion-MNIST is not shipped here. The ``smoke`` and ``quick`` presets run it when ``--data-dir`` holds
the files and otherwise leave a not-run marker (:mod:`analyses.optional_data`), so the figure's right panel
says it was not run; the ``paper`` preset requires the data and fails with the data module's message.
"""

from __future__ import annotations

from dataclasses import replace

from analyses import van_thin
from analyses.van_thin import execute

__all__ = ["Config", "execute", "runs"]


class Config(van_thin.Config):
    """:class:`analyses.van_thin.Config` with Fashion-MNIST presets (full train/test sets)."""

    @classmethod
    def smoke(cls) -> van_thin.Config:
        return replace(van_thin.Config.smoke(), dataset="fashion_mnist", optional_data=True)

    @classmethod
    def quick(cls) -> van_thin.Config:
        return replace(van_thin.Config.quick(), dataset="fashion_mnist", n_train=8000, n_test=2000, optional_data=True)

    @classmethod
    def medium(cls) -> van_thin.Config:
        """= quick (as :meth:`analyses.van_thin.Config.medium`)."""
        return cls.quick()

    @classmethod
    def paper(cls) -> van_thin.Config:
        return replace(van_thin.Config.paper(), dataset="fashion_mnist")


def runs(config: van_thin.Config) -> list[dict]:
    """The runs of :func:`analyses.van_thin.runs`, labelled with this analysis."""
    return [{**params, "analysis": "van_thin_fashion"} for params in van_thin.runs(config)]
