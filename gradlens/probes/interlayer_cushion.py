"""InterlayerCushion: per-sample interlayer cushion μ_{i,j}(x^i) of every block on the probe batch.

μ_{i,j}(x^i) = √n_i ‖J x^i‖ / (‖J‖_F ‖x^i‖), document 004, section 5; see
:func:`gradlens.metrics.interlayer_cushion`. The blocks are the model's declared segments
(``ModelSpec.blocks``) or modules named by the user; each maps its input x^i (its first positional argument)
to its output x^j (a tuple output: its first element). Blocks are evaluated in eval mode, model state
restored afterwards. BatchNorm inside a block normalises by its running statistics (``bn_statistics=
"running"``, the default) or by the statistics of its input: of the whole probe batch (``"batch"``) or of each
sample alone (``"sample"``); see the metric for what J and J x mean in each reading. Where an operation of the
block has no forward-mode derivative (SDPA attention on CPU), the reverse-mode route is taken automatically.

A block is called with its first positional input only: a block that needs further arguments (an attention
mask for padded sequences) is measured without them, so use a probe batch without padding.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn

from gradlens.metrics import cushion_summary, interlayer_cushion, statistics_of_input
from gradlens.metrics.cushion import check_interlayer_options
from gradlens.probes.base import PROBE_BATCH, Probe, Quantity, Schedule
from gradlens.probes.dominant_flow import check_modules
from gradlens.probes.layer_cushion import SUMMARY
from gradlens.spec import ModelSpec

PER_SAMPLE = ("mu", "jx_norm", "jac_fro", "jac_fro_sq_se")


class InterlayerCushion(Probe):
    """Interlayer cushions of blocks (default: every block the model declares).

    Records per block and sample ``mu``, ``jx_norm`` (‖J x‖), ``jac_fro`` (‖J‖_F) and ``jac_fro_sq_se``
    (standard error of the Hutchinson ‖J‖_F² estimate, 0 when exact), per block the summary of μ over the
    finite samples (``min``, ``median``, ``mean``, ``std``, ``nonfinite``), and ``reverse`` (1 where the
    reverse-mode route was taken).

    Args:
        every: schedule (None: the session default).
        blocks: module names of the segments (default: ``ctx.spec.blocks``).
        method: ``"exact"``, ``"hutchinson"`` or ``"auto"`` (see the metric).
        num_probes: Hutchinson probes k.
        chunk_size: JVPs/VJPs per batched call of the exact route.
        seed: seed of the Hutchinson probes (a local generator; the same probes at every firing).
        bn_statistics: ``"running"`` (eval-mode BN, default), ``"batch"`` (BN statistics of the probe batch) or
            ``"sample"`` (BN statistics of each sample alone).
        autodiff: ``"auto"`` (forward mode, reverse where forward mode is missing), ``"forward"`` or
            ``"reverse"``.
        name: HDF5 group name.
    """

    needs = frozenset({PROBE_BATCH})

    def __init__(
        self,
        every: int | Iterable[int] | Schedule | None = None,
        blocks: Sequence[str] | None = None,
        method: str = "auto",
        num_probes: int = 64,
        chunk_size: int = 32,
        seed: int = 0,
        bn_statistics: str = "running",
        autodiff: str = "auto",
        name: str = "interlayer_cushion",
    ) -> None:
        super().__init__(every)
        check_interlayer_options(method, bn_statistics, autodiff)
        self.blocks = None if blocks is None else list(blocks)
        self.method, self.num_probes, self.chunk_size, self.seed = method, num_probes, chunk_size, seed
        self.bn_statistics, self.autodiff = bn_statistics, autodiff
        self.name = name

    def validate(self, model: nn.Module, spec: ModelSpec | None) -> None:
        """Unknown block names and a model without declared blocks are reported at attach time."""
        blocks = self.blocks if self.blocks is not None else (spec.blocks if spec is not None else ())
        if not blocks:
            raise ValueError(
                "InterlayerCushion found no blocks: the model declares none; pass blocks=[module names]"
            )
        check_modules(model, blocks, "InterlayerCushion", "blocks")

    def _blocks(self, ctx) -> list[str]:
        blocks = list(ctx.spec.blocks) if self.blocks is None else self.blocks
        if not blocks:
            raise ValueError(
                "InterlayerCushion found no blocks: the model declares none; pass blocks=[module names]"
            )
        for name in blocks:
            ctx.module(name)
        return blocks

    def _inputs(self, ctx, blocks: list[str]) -> dict[str, torch.Tensor]:
        """Each block's input x^i on the probe batch, the network read as the block is (``bn_statistics``).

        ``"running"``: one eval-mode forward. ``"batch"``: one forward in which every BatchNorm of the model
        normalises by the statistics of the probe batch. ``"sample"``: one forward per sample, every BatchNorm
        normalising by that sample's own statistics. Running buffers are never read nor updated in the last two.
        """
        x = ctx.probe_batch[0]
        with statistics_of_input(ctx.model, self.bn_statistics):
            if self.bn_statistics != "sample":
                seen = ctx.capture(x, inputs=blocks, eval_mode=True)
                return {name: seen.inputs[name].detach() for name in blocks}
            parts = [ctx.capture(x[b : b + 1], inputs=blocks, eval_mode=True) for b in range(x.shape[0])]
        return {name: torch.cat([p.inputs[name].detach() for p in parts]) for name in blocks}

    def quantities(self, ctx) -> dict[str, Quantity]:
        blocks = self._blocks(ctx)
        batch = int(ctx.probe_batch[0].shape[0])
        labels = {"layer": blocks}
        out = {q: Quantity((len(blocks), batch), ("layer", "sample"), labels) for q in PER_SAMPLE}
        out.update({q: Quantity((len(blocks),), ("layer",), labels) for q in SUMMARY})
        out["reverse"] = Quantity((len(blocks),), ("layer",), labels)
        return out

    def compute(self, ctx) -> dict[str, torch.Tensor]:
        blocks = self._blocks(ctx)
        inputs = self._inputs(ctx, blocks)
        rows = {q: [] for q in PER_SAMPLE}
        reverse = []
        with ctx.isolated(eval_mode=True):
            for name in blocks:
                result = interlayer_cushion(
                    ctx.module(name),
                    inputs[name],
                    self.method,
                    chunk_size=self.chunk_size,
                    num_probes=self.num_probes,
                    seed=self.seed,
                    bn_statistics=self.bn_statistics,
                    autodiff=self.autodiff,
                )
                for q in PER_SAMPLE:
                    rows[q].append(getattr(result, q).detach())
                reverse.append(float(result.autodiff == "reverse"))
        out = {q: torch.stack(values) for q, values in rows.items()}
        summaries = [cushion_summary(row) for row in out["mu"]]
        out.update({q: torch.stack([s[q] for s in summaries]).double() for q in SUMMARY})
        out["reverse"] = torch.tensor(reverse, dtype=torch.float64)
        return out
