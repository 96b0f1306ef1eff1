"""GradStats: per-layer statistics of the weight gradient at every optimizer step it fires.

For layer ℓ with weight gradient g = ∂L/∂W^(ℓ) (n_ℓ entries), one record holds

- ``mean``      = (1/n_ℓ) Σ g        — the signed "mean gradient" of document 000 (SCNet, Figs. 5–6)
- ``mean_abs``  = (1/n_ℓ) Σ |g|
- ``norm``      = ‖g‖₂
- ``max_abs``   = max |g|
- ``nonfinite`` = number of NaN/±Inf entries (the other statistics are then non-finite too: recorded as
  they are, never raised)
- ``hist``      = counts of g in fixed bin edges (optional; values outside the edges are not counted)

A layer whose weight received no gradient (``.grad is None``) records NaN statistics and ``nonfinite = -1``.
Cost: fused ``torch._foreach_abs/_foreach_norm/_foreach_max`` calls plus two sums per layer (about 0.4 ms for
the 32 layers of a thin 30-layer MLP on a CPU core); NaN counting runs only when a norm is non-finite; the
histogram is one bucketize + bincount over all layers.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from gradlens.probes.base import GRADS, Probe, Quantity, Schedule

STATISTICS = ("mean", "mean_abs", "norm", "max_abs", "nonfinite")


class GradStats(Probe):
    """Per-layer weight-gradient statistics: mean, mean |g|, L2 norm, max |g|, non-finite count, histogram.

    Args:
        every: schedule (None: the session default).
        bins: optional fixed histogram bin edges (increasing), e.g. ``numpy.linspace(-1e-2, 1e-2, 41)``.
        name: the HDF5 group name (default ``"grad_stats"``).
    """

    needs = frozenset({GRADS})

    def __init__(
        self,
        every: int | Iterable[int] | Schedule | None = None,
        bins: Sequence[float] | None = None,
        name: str = "grad_stats",
    ) -> None:
        super().__init__(every)
        self.name = name
        self.edges = None if bins is None else torch.as_tensor(list(bins), dtype=torch.float64)
        if self.edges is not None and (self.edges.numel() < 2 or not bool((self.edges.diff() > 0).all())):
            raise ValueError(f"GradStats bins must be at least two increasing edges, got {list(bins)}")

    def quantities(self, ctx) -> dict[str, Quantity]:
        names = [layer.name for layer in ctx.layers]
        n = len(names)
        per_layer = {"layer": names}
        out = {q: Quantity((n,), ("layer",), per_layer) for q in STATISTICS}
        if self.edges is not None:
            out["hist"] = Quantity((n, self.edges.numel() - 1), ("layer", "bin"), per_layer, dtype="int64")
            out["hist_edges"] = Quantity((self.edges.numel(),), ("edge",))
        return out

    def compute(self, ctx) -> dict[str, torch.Tensor]:
        grads = [layer.weight.grad for layer in ctx.layers]
        present = [g for g in grads if g is not None]
        values = self._statistics(present) if present else {}
        if len(present) == len(grads):
            out = values
        else:  # layers without a gradient: NaN statistics, nonfinite = -1
            index = torch.tensor([i for i, g in enumerate(grads) if g is not None], dtype=torch.long)
            out = {q: torch.full((len(grads),), float("nan"), dtype=torch.float64) for q in STATISTICS}
            out["nonfinite"].fill_(-1.0)
            for q, v in values.items():
                out[q][index] = v
        if self.edges is not None:
            out["hist"] = torch.zeros((len(grads), self.edges.numel() - 1), dtype=torch.int64)
            if present:
                index = [i for i, g in enumerate(grads) if g is not None]
                out["hist"][index] = self._histogram(present)
            out["hist_edges"] = self.edges
        return out

    @staticmethod
    def _statistics(grads: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """The per-layer statistics of ``grads`` (all present), float64 on the CPU."""
        sizes = torch.tensor([g.numel() for g in grads], dtype=torch.float64)
        magnitudes = torch._foreach_abs(grads)
        l2 = torch.stack(torch._foreach_norm(grads, 2)).double().cpu()
        linf = torch.stack(torch._foreach_max(magnitudes)).double().cpu()
        # Σ|g| has no cancellation, so the layer's own dtype is exact to its rounding; the signed Σg may
        # cancel heavily and is accumulated in float64.
        l1 = torch.stack([m.sum() for m in magnitudes]).double().cpu()
        sums = torch.stack([g.sum(dtype=torch.float64) for g in grads]).cpu()
        if bool(torch.isfinite(l2).all()):
            nonfinite = torch.zeros(len(grads), dtype=torch.float64)
        else:
            nonfinite = torch.stack([(~torch.isfinite(g)).sum() for g in grads]).double().cpu()
        return {"mean": sums / sizes, "mean_abs": l1 / sizes, "norm": l2, "max_abs": linf, "nonfinite": nonfinite}

    def _histogram(self, grads: list[torch.Tensor]) -> torch.Tensor:
        """Counts per (layer, bin) with one bucketize + bincount over all layers at once."""
        flat = torch.cat([g.reshape(-1) for g in grads]).double()
        sizes = torch.tensor([g.numel() for g in grads], device=flat.device)
        segments = torch.repeat_interleave(torch.arange(len(grads), device=flat.device), sizes)
        edges = self.edges.to(flat.device)
        bins = edges.numel() - 1
        bucket = torch.bucketize(flat, edges, right=True) - 1
        # the last edge is inclusive, as in numpy.histogram
        bucket = torch.where(flat == edges[-1], bins - 1, bucket)
        inside = (bucket >= 0) & (bucket < bins) & torch.isfinite(flat)
        flat_index = segments[inside] * bins + bucket[inside]
        return torch.bincount(flat_index, minlength=len(grads) * bins).reshape(len(grads), bins).cpu()
