"""DominantFlow: the fraction σ^(ℓ) of channels with a dominant gradient flow, all layers at once.

Document 004, appendix D, eqs. 5, 6, 13; see :func:`gradlens.metrics.dominant_flow`. One forward of the probe
batch captures the intermediate activations a^(ℓ) and the final activation a^(L) in the graph; one batched
vector-Jacobian product with D_L cotangents gives Θ for every layer. The network is evaluated in eval mode by
default, so that Θ of a sample involves that sample alone (BN with running statistics).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from gradlens.metrics import dominant_flow
from gradlens.probes.base import PROBE_BATCH, Probe, Quantity, Schedule


def final_activation(ctx, name: str | None) -> str:
    """The module whose output is a^(L): ``name``, else the model's declared final activation."""
    chosen = name or ctx.spec.final_activation
    if chosen is None:
        raise ValueError("no final activation a^(L): the model declares none; pass final='module name'")
    ctx.module(chosen)
    return chosen


class DominantFlow(Probe):
    """σ^(ℓ) per activation layer (mean over the probe batch and per sample) and the ratios r_i.

    Records ``sigma`` ``[layer]``, ``sigma_per_sample`` ``[layer, sample]``, ``r``
    ``[layer, sample, channel]`` (NaN-padded to the widest layer) and ``nonfinite`` ``[layer]``: the samples whose
    σ is NaN (non-finite activations or gradients), which ``sigma`` leaves NaN rather than hiding.

    Args:
        every: schedule (None: the session default).
        activations: modules whose outputs are a^(ℓ) (default: the model's declared activations).
        final: module whose output is a^(L) (default: the model's declared final activation).
        eval_mode: evaluate in eval mode (default) or in the mode training is in.
        name: HDF5 group name.
    """

    needs = frozenset({PROBE_BATCH})

    def __init__(
        self,
        every: int | Iterable[int] | Schedule | None = None,
        activations: Sequence[str] | None = None,
        final: str | None = None,
        eval_mode: bool = True,
        name: str = "dominant_flow",
    ) -> None:
        super().__init__(every)
        self.activations = None if activations is None else list(activations)
        self.final = final
        self.eval_mode = eval_mode
        self.name = name

    def _activations(self, ctx) -> list[str]:
        names = list(ctx.spec.activations) if self.activations is None else self.activations
        if not names:
            raise ValueError(
                "DominantFlow found no activations: the model declares none; pass activations=[...]"
            )
        for name in names:
            ctx.module(name)
        return names

    def _channels(self, ctx, names: list[str]) -> list[int]:
        seen = ctx.capture(ctx.probe_batch[0][:1], outputs=names, eval_mode=True)
        return [int(seen.outputs[n].shape[1]) for n in names]

    def quantities(self, ctx) -> dict[str, Quantity]:
        names = self._activations(ctx)
        batch = int(ctx.probe_batch[0].shape[0])
        widest = max(self._channels(ctx, names))
        labels = {"layer": names}
        return {
            "sigma": Quantity((len(names),), ("layer",), labels),
            "sigma_per_sample": Quantity((len(names), batch), ("layer", "sample"), labels),
            "r": Quantity((len(names), batch, widest), ("layer", "sample", "channel"), labels),
            "nonfinite": Quantity((len(names),), ("layer",), labels),
        }

    def compute(self, ctx) -> dict[str, torch.Tensor]:
        names = self._activations(ctx)
        final = final_activation(ctx, self.final)
        x, y = ctx.probe_batch
        seen = ctx.capture(x, outputs=[*names, final], grad=True, eval_mode=self.eval_mode)
        with torch.enable_grad():
            loss = ctx.loss_fn(seen.output, y)
            result = dominant_flow(seen.outputs[final], [seen.outputs[n] for n in names], loss=loss)
        widest = max(r.shape[1] for r in result.r)
        r = torch.full((len(names), x.shape[0], widest), float("nan"), dtype=torch.float64)
        for index, ratios in enumerate(result.r):
            r[index, :, : ratios.shape[1]] = ratios.detach().double().cpu()
        per_sample = result.sigma_per_sample.detach().T
        return {
            "sigma": result.sigma.detach(),
            "sigma_per_sample": per_sample,
            "r": r,
            "nonfinite": (~torch.isfinite(per_sample)).sum(dim=1).double(),
        }
