"""The Fashion-MNIST half of document 002's Figure 1: :mod:`analyses.van_thin` on ``fashion_mnist``.

Fashion-MNIST is not shipped with the repository; Debian's ``dataset-fashion-mnist`` installs the real set
(found without options, :mod:`gradlens.data.locate`). The ``smoke``, ``quick`` and ``medium`` presets run it
when it is in the data folders and otherwise leave a not-run marker (:mod:`analyses.optional_data`), so the
figure's right panel says it was not run; ``paper`` requires the data and fails with the data module's message.

``quick``: as :meth:`analyses.van_thin.Config.quick` (8 000 / 2 000 images, 15 epochs = 945 steps, η = 0.01).
``medium``: the document's data, the whole 60 000 / 10 000 set, batch 128, for 5 epochs (2 345 steps) at
η = 0.01, so that η × steps = 23.45 is the document's (η = 0.001 × 50 epochs × 469 steps) in a tenth of its
steps; every other setting as quick. (The MNIST half stays at quick's settings at medium: the repository's
MNIST is the 10 000-image subset.)
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
        """The whole set at η = 0.01 for 5 epochs: the document's η × steps (0.001 × 50 × 469) in a tenth of its
        steps."""
        return replace(van_thin.Config.quick(), dataset="fashion_mnist", epochs=5, lr=0.01, optional_data=True)

    @classmethod
    def paper(cls) -> van_thin.Config:
        return replace(van_thin.Config.paper(), dataset="fashion_mnist")


def runs(config: van_thin.Config) -> list[dict]:
    """The runs of :func:`analyses.van_thin.runs`, labelled with this analysis."""
    return [{**params, "analysis": "van_thin_fashion"} for params in van_thin.runs(config)]
