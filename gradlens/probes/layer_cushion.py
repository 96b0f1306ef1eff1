"""LayerCushion: per-sample layer cushion μ_ℓ(x) of every weight layer on the probe batch.

μ_ℓ(x) = ‖A x‖ / (‖A‖_F ‖x‖) (residual layers: ‖x + A x‖ in the numerator), document 004, section 5;
see :func:`gradlens.metrics.layer_cushion`. One forward of the probe batch captures each layer's input and
output (no convolution is recomputed); ‖A‖_F of each operator comes in closed form.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from gradlens.metrics import cushion_summary, layer_cushion
from gradlens.probes.base import PROBE_BATCH, Probe, Quantity, Schedule

SUMMARY = ("min", "median", "mean", "std", "nonfinite")


class LayerCushion(Probe):
    """Per-sample layer cushions of the chosen layers (default: every layer of the session).

    Records ``mu`` ``[layer, sample]`` and per layer ``min`` (Arora et al.'s cushion), ``median``, ``mean``,
    ``std`` and ``nonfinite``.

    Args:
        every: schedule (None: the session default).
        layers: layer names (default: all of ``ctx.layers``; residual flags come from the model spec).
        eval_mode: evaluate the network in eval mode (BN with running statistics; the default), else in the
            mode training is in. Buffers and RNG are restored either way.
        name: HDF5 group name.
    """

    needs = frozenset({PROBE_BATCH})

    def __init__(
        self,
        every: int | Iterable[int] | Schedule | None = None,
        layers: Sequence[str] | None = None,
        eval_mode: bool = True,
        name: str = "layer_cushion",
    ) -> None:
        super().__init__(every)
        self.names = None if layers is None else list(layers)
        self.eval_mode = eval_mode
        self.name = name

    def _layers(self, ctx) -> list:
        if self.names is None:
            return list(ctx.layers)
        by_name = {layer.name: layer for layer in ctx.layers}
        unknown = [n for n in self.names if n not in by_name]
        if unknown:
            raise ValueError(
                f"LayerCushion layers {unknown} are not layers of this session; choose from {list(by_name)}"
            )
        return [by_name[n] for n in self.names]

    def quantities(self, ctx) -> dict[str, Quantity]:
        names = [layer.name for layer in self._layers(ctx)]
        batch = int(ctx.probe_batch[0].shape[0])
        labels = {"layer": names}
        out = {"mu": Quantity((len(names), batch), ("layer", "sample"), labels)}
        out.update({q: Quantity((len(names),), ("layer",), labels) for q in SUMMARY})
        return out

    def compute(self, ctx) -> dict[str, torch.Tensor]:
        layers = self._layers(ctx)
        names = [layer.name for layer in layers]
        seen = ctx.capture(ctx.probe_batch[0], inputs=names, outputs=names, eval_mode=self.eval_mode)
        mu = torch.stack(
            [
                layer_cushion(
                    layer.module, seen.inputs[layer.name], layer.residual, out=seen.outputs[layer.name]
                )
                for layer in layers
            ]
        )
        summaries = [cushion_summary(row) for row in mu]
        out = {"mu": mu}
        out.update({q: torch.stack([s[q] for s in summaries]).double() for q in SUMMARY})
        return out
