"""LayerCushion: per-sample layer cushion μ_ℓ(x) of every weight layer on the probe batch.

μ_ℓ(x) = ‖A x‖ / (‖A‖_F ‖x‖) (residual layers: ‖x + A x‖ in the numerator), document 004, section 5;
see :func:`gradlens.metrics.layer_cushion`. One forward of the probe batch captures each layer's input and
output (no convolution is recomputed); ‖A‖_F of each operator comes in closed form. Every layer is measured,
including a residual layer that changes channels or size (its identity part is the map of the ID entries of
document 004, eq. 1: :func:`gradlens.metrics.identity_part`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn

from gradlens.metrics import cushion_summary, layer_cushion
from gradlens.probes.base import PROBE_BATCH, Probe, Quantity, Schedule
from gradlens.probes.dominant_flow import check_modules, module_names
from gradlens.spec import ModelSpec

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

    def validate(self, model: nn.Module, spec: ModelSpec | None) -> None:
        """Unknown layer names and layer types without a cushion handler are reported at attach time."""
        if self.names is not None:
            check_modules(model, self.names, "LayerCushion", "layers")
            names = self.names
        else:
            names = spec.layer_names() if spec is not None else []
        table = module_names(model)
        for name in names:
            _check_supported(name, table.get(name))

    def _layers(self, ctx) -> list:
        if self.names is None:
            layers = list(ctx.layers)
        else:
            by_name = {layer.name: layer for layer in ctx.layers}
            unknown = [n for n in self.names if n not in by_name]
            if unknown:
                raise ValueError(
                    f"LayerCushion layers {unknown} are not layers of this session; choose from {list(by_name)}"
                )
            layers = [by_name[n] for n in self.names]
        for layer in layers:
            _check_supported(layer.name, layer.module)
        return layers

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


def _check_supported(name: str, module: nn.Module | None) -> None:
    if module is None:
        return
    supported = isinstance(module, nn.Linear) or (
        isinstance(module, nn.modules.conv._ConvNd) and not module.transposed
    )
    if not supported:
        raise ValueError(
            f"LayerCushion has no handler for layer {name!r} ({type(module).__name__}); it measures nn.Linear "
            f"and nn.Conv1d/2d/3d: pass layers=[...] without it"
        )
