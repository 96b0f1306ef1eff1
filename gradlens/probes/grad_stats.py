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
Cost: three fused ``torch._foreach_norm`` calls (L1, L2, L∞) and one segmented sum over the concatenated
gradients, independent of the number of layers; NaN counting runs only when a norm is non-finite.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from gradlens.probes.base import GRADS, Probe, Quantity, Schedule


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
        self._segments: torch.Tensor | None = None

    def quantities(self, ctx) -> dict[str, Quantity]:
        names = [layer.name for layer in ctx.layers]
        n = len(names)
        per_layer = {"layer": names}
        out = {
            q: Quantity((n,), ("layer",), per_layer)
            for q in ("mean", "mean_abs", "norm", "max_abs", "nonfinite")
        }
        if self.edges is not None:
            out["hist"] = Quantity((n, self.edges.numel() - 1), ("layer", "bin"), per_layer, dtype="int64")
            out["hist_edges"] = Quantity((self.edges.numel(),), ("edge",))
        return out

    def compute(self, ctx) -> dict[str, torch.Tensor]:
        grads = [layer.weight.grad for layer in ctx.layers]
        present = [g for g in grads if g is not None]
        n = len(grads)
        ref = present[0] if present else ctx.layers[0].weight
        out = {
            q: torch.full((n,), float("nan"), dtype=torch.float64)
            for q in ("mean", "mean_abs", "norm", "max_abs")
        }
        out["nonfinite"] = torch.full((n,), -1.0, dtype=torch.float64)
        if self.edges is not None:
            out["hist"] = torch.zeros((n, self.edges.numel() - 1), dtype=torch.int64)
            out["hist_edges"] = self.edges
        if not present:
            return out
        idx = torch.tensor([i for i, g in enumerate(grads) if g is not None])
        sizes = torch.tensor([g.numel() for g in present], dtype=torch.float64, device=ref.device)
        l1 = torch.stack(torch._foreach_norm(present, 1)).double()
        l2 = torch.stack(torch._foreach_norm(present, 2)).double()
        linf = torch.stack(torch._foreach_norm(present, float("inf"))).double()
        flat = torch.cat([g.reshape(-1) for g in present])
        if self._segments is None or self._segments.numel() != flat.numel():
            self._segments = torch.repeat_interleave(
                torch.arange(len(present), device=flat.device), sizes.long().to(flat.device)
            )
        sums = torch.zeros(len(present), dtype=torch.float64, device=flat.device).index_add_(
            0, self._segments, flat.double()
        )
        nonfinite = torch.zeros(len(present), dtype=torch.float64, device=flat.device)
        if not bool(torch.isfinite(l2).all()):
            nonfinite.index_add_(0, self._segments, (~torch.isfinite(flat)).double())
        out["mean"][idx] = (sums / sizes).cpu()
        out["mean_abs"][idx] = (l1 / sizes).cpu()
        out["norm"][idx] = l2.cpu()
        out["max_abs"][idx] = linf.cpu()
        out["nonfinite"][idx] = nonfinite.cpu()
        if self.edges is not None:
            out["hist"][idx] = self._histogram(flat, len(present)).cpu()
        return out

    def _histogram(self, flat: torch.Tensor, layers: int) -> torch.Tensor:
        """Counts per (layer, bin) with one bucketize + bincount over all layers at once."""
        edges = self.edges.to(flat.device)
        bins = edges.numel() - 1
        values = flat.double()
        bucket = torch.bucketize(values, edges, right=True) - 1
        # the last edge is inclusive, as in numpy.histogram
        bucket = torch.where(values == edges[-1], bins - 1, bucket)
        inside = (bucket >= 0) & (bucket < bins) & torch.isfinite(values)
        flat_index = self._segments[inside] * bins + bucket[inside]
        return torch.bincount(flat_index, minlength=layers * bins).reshape(layers, bins)
