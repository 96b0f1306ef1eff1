"""Training curves of simplified PlnNets (KWI) and ResNets (HMWI) of depth 20 (document 004, Figure 2; its
Figure 8 repeats it): the runs yt-fig2 draws.

Document 004, Figure 2 (and Figure 8): "Plots of risk L (left) and error E (right) as a function of training
time for plain (blue) and residual (red) networks of depth 20 after training for 1200 epochs on the CIFAR-10
dataset. The results are based on training 13 plain networks and 13 residual networks initialized at random (but
equivalently to each other), to estimate variance in the results."

These are :mod:`analyses.simplified_training` runs (``RUNS_OF``): the parameter dicts are built by
:func:`analyses.simplified_training.runs`, carry ``"analysis": "simplified_training"``, and the runner keys,
stores and trains them as that analysis's runs (``<root>/simplified_training/<key>.h5``, trained by
:func:`analyses.simplified_training.execute`). A run that both analyses plan is therefore one file, trained once;
the items reading ``simplified_training`` (yt-tab1, yt-tab3/4/5, yt-fig7, yt-fig9) never see the runs only this
analysis plans, because they read only the runs of their own plan.

Presets:

- ``smoke`` / ``quick`` / ``medium``: exactly the plain and residual runs of ``simplified_training``'s own preset
  at the depth yt-fig2 draws there (5 at smoke: its smallest depth; 20 at quick and medium): identical dicts, hence
  identical keys, so the Table-1 runs already made are reused.
- ``paper``: the document's Figure 2: 13 seeds × {plain, residual} at depth 20, 1200 epochs, CIFAR-10, batch 128,
  learning rate 1e-2, λ = 1e-4 (Table 1's setup). The document gives the learning-rate schedule only for its
  200-epoch runs ("The learning rate was divided by 10 after epochs 120 and 160 for all networks", Table 1), not
  for the 1200-epoch runs of Figure 2; we keep its fractions of training (60 % and 80 %) and divide by 10 after
  epochs 720 and 960 of 1200. No weights file is written and no noise-stability probe is recorded (Figure 2 reads
  only the per-epoch scalars).
  "Initialized at random (but equivalently to each other)" is read as the same seed for the plain and the
  residual net of a pair (KWI and HMWI draws from one generator state), as in Table 1's runs; the exactly
  equivalent initialisation p₀ = T(r₀) is analysis ``equivalence`` (Figure 6, Table 2).
"""

from __future__ import annotations

from dataclasses import replace

from analyses import simplified_training
from analyses.simplified_training import execute

__all__ = ["RUNS_OF", "Config", "execute", "runs"]

RUNS_OF = "simplified_training"
KINDS = ("plain", "residual")


class Config(simplified_training.Config):
    """:class:`analyses.simplified_training.Config` restricted to the plain and residual nets of one depth."""

    @classmethod
    def smoke(cls) -> simplified_training.Config:
        # yt-fig2 draws depth 20 when there is one, else the smallest depth (5 of the smoke preset's 5 and 8)
        return replace(simplified_training.Config.smoke(), depths=(5,), kinds=KINDS)

    @classmethod
    def quick(cls) -> simplified_training.Config:
        return replace(simplified_training.Config.quick(), depths=(20,), kinds=KINDS)

    @classmethod
    def medium(cls) -> simplified_training.Config:
        return replace(simplified_training.Config.medium(), depths=(20,), kinds=KINDS)

    @classmethod
    def paper(cls) -> simplified_training.Config:
        # 13 + 13 nets of depth 20, 1200 epochs; lr /10 at 60 % and 80 % of training (epochs 720 and 960), the
        # fractions of the document's 120 and 160 of 200 (it states no schedule for the 1200-epoch runs)
        return replace(simplified_training.Config.paper(), depths=(20,), kinds=KINDS, seeds=tuple(range(13)),
                       epochs=1200, weights_depth=0, milestone_fractions=(0.6, 0.8), noise=None)


def runs(config: simplified_training.Config) -> list[dict]:
    """kinds × depths × seeds, as :func:`analyses.simplified_training.runs` makes them."""
    return simplified_training.runs(config)
