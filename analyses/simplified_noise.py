"""Noise stability and dominant gradient flow of the simplified PlnNets (KWI) and ResNets (HMWI) (document 004,
section 5 and appendix D): the nets yt-fig3 (layer cushion, Figure 3), yt-fig10 (∂L/∂a^(L), Figure 10) and
yt-fig12 (σ^(ℓ) of eq. 13, Figure 12(a)) read.

These are :mod:`analyses.simplified_training` runs (``RUNS_OF``), the Table-1 nets themselves: the runs its
``Config.noise`` (:class:`analyses.simplified_training.NoiseProbes`) covers record LayerCushion at the last step,
DominantFlow at the first and the last step and, for residual nets, FinalGradHist over the first epochs, on a fixed
probe batch of test samples, and this analysis plans exactly those runs: identical dicts, hence identical keys,
so ``simplified_plain_20`` seed 0 is one file (``<root>/simplified_training/<key>.h5``), trained once, whether
yt-tab1 or yt-fig3 asks for it, and both report the same test accuracy. Drawing a noise-stability item alone
trains only these runs, not the whole Table-1 sweep.

Presets: each scale's ``simplified_training`` preset restricted to the plain and residual nets of the depths and
seeds its noise probes cover:

- ``smoke``: depths 5 and 8, seed 0, 8×8 digits, 2 epochs;
- ``quick``: depths 20 and 32, seed 0, 14×14 MNIST, batch 32, 6 epochs;
- ``medium``: depths 20 and 32, seed 0, 14×14 MNIST, batch 128, 30 epochs;
- ``paper``: depths 20 and 32, seed 0, CIFAR-10, 200 epochs (the document's Figure 3: "All the four networks
  are trained for 200 epochs on CIFAR-10 dataset"; Figure 12: "Simplified ... networks are trained for 200 ...
  epochs with initial learning rate 0.01").

The training (optimizer, explicit λ‖θ‖² penalty, learning-rate schedule, data) is Table 1's, described in
:mod:`analyses.simplified_training`.
"""

from __future__ import annotations

from dataclasses import replace

from analyses import simplified_training
from analyses.simplified_training import NOISE_KINDS, execute

__all__ = ["RUNS_OF", "Config", "execute", "runs"]

RUNS_OF = "simplified_training"


def covered(config: simplified_training.Config) -> simplified_training.Config:
    """``config`` restricted to the plain and residual runs that record the noise-stability probes."""
    return replace(config, kinds=NOISE_KINDS, depths=config.noise.depths, seeds=config.noise.seeds)


class Config(simplified_training.Config):
    """:class:`analyses.simplified_training.Config` restricted to the runs with the noise-stability probes."""

    @classmethod
    def smoke(cls) -> simplified_training.Config:
        return covered(simplified_training.Config.smoke())

    @classmethod
    def quick(cls) -> simplified_training.Config:
        return covered(simplified_training.Config.quick())

    @classmethod
    def medium(cls) -> simplified_training.Config:
        return covered(simplified_training.Config.medium())

    @classmethod
    def paper(cls) -> simplified_training.Config:
        return covered(simplified_training.Config.paper())


def runs(config: simplified_training.Config) -> list[dict]:
    """The plain and residual runs of the covered depths and seeds, as :func:`analyses.simplified_training.runs`
    makes them (with their ``noise`` settings)."""
    return simplified_training.runs(config)
