"""FinalGradHist: histogram, mean and sd of ∂L/∂a^(L) on the probe batch (document 004, Figure 10).

See :func:`gradlens.metrics.final_grad_histogram`. Bin edges are fixed for the whole run, so histograms of
different steps can be added: given, or chosen at the first firing as ±``span_sd`` standard deviations of
that first gradient (rounded up to one significant digit) and recorded with every record.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from gradlens.metrics import final_grad_histogram
from gradlens.probes.base import PROBE_BATCH, Probe, Quantity, Schedule
from gradlens.probes.dominant_flow import declared_final, final_activation, output_tensor
from gradlens.spec import ModelSpec

MOMENTS = ("below", "above", "nonfinite", "count", "mean", "std")


class FinalGradHist(Probe):
    """Histogram of the gradient of the loss w.r.t. the final activation a^(L).

    Records ``counts`` ``[bin]``, ``edges`` ``[edge]`` and the scalars ``below``, ``above``, ``nonfinite``,
    ``count``, ``mean``, ``std``.

    Args:
        every: schedule (None: the session default).
        final: module whose output is a^(L) (default: the model's declared final activation).
        edges: increasing bin edges; default: ``bins`` bins over ±``span_sd`` sd of the first gradient.
        bins: number of bins when ``edges`` is not given.
        span_sd: half-width of the automatic range, in standard deviations.
        eval_mode: evaluate in eval mode (default) or in the mode training is in.
        name: HDF5 group name.
    """

    needs = frozenset({PROBE_BATCH})

    def __init__(
        self,
        every: int | Iterable[int] | Schedule | None = None,
        final: str | None = None,
        edges: Iterable[float] | None = None,
        bins: int = 60,
        span_sd: float = 5.0,
        eval_mode: bool = True,
        name: str = "final_grad_hist",
    ) -> None:
        super().__init__(every)
        self.final = final
        self.edges = None if edges is None else torch.as_tensor(list(edges), dtype=torch.float64)
        self.bins = bins if self.edges is None else self.edges.numel() - 1
        if self.bins < 1:
            raise ValueError(f"FinalGradHist needs at least one bin, got bins={bins}")
        self.span_sd = span_sd
        self.eval_mode = eval_mode
        self.name = name

    def validate(self, model: nn.Module, spec: ModelSpec | None) -> None:
        """An unknown or missing final activation is reported at attach time."""
        declared_final("FinalGradHist", model, spec, self.final)

    def quantities(self, ctx) -> dict[str, Quantity]:
        final_activation(ctx, self.final)
        out = {
            "counts": Quantity((self.bins,), ("bin",), dtype="int64"),
            "edges": Quantity((self.bins + 1,), ("edge",)),
        }
        out.update({q: Quantity((), ()) for q in MOMENTS})
        return out

    def compute(self, ctx) -> dict[str, torch.Tensor]:
        final = final_activation(ctx, self.final)
        x, y = ctx.probe_batch
        seen = ctx.capture(x, outputs=[final], grad=True, eval_mode=self.eval_mode)
        with torch.enable_grad():
            loss = ctx.loss_fn(seen.output, y)
            (grad,) = torch.autograd.grad(loss, output_tensor(seen.outputs[final], final), allow_unused=True)
        if grad is None:
            raise ValueError(
                f"the loss does not depend on the final activation {final!r}; name the a^(L) module"
            )
        if self.edges is None:
            self.edges = self._automatic_edges(grad)
        result = final_grad_histogram(grad, self.edges)
        out = {"counts": result.counts, "edges": self.edges}
        out.update({q: getattr(result, q).double() for q in MOMENTS})
        return out

    def _automatic_edges(self, grad: torch.Tensor) -> torch.Tensor:
        finite = grad[torch.isfinite(grad)].double()
        spread = float(finite.std()) if finite.numel() > 1 else 0.0
        spread = spread if spread > 0 else 1e-12
        half = self.span_sd * spread
        digits = math.floor(math.log10(half))
        half = math.ceil(half / 10**digits) * 10**digits
        return torch.linspace(-half, half, self.bins + 1, dtype=torch.float64)
