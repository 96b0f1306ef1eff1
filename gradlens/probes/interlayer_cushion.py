"""InterlayerCushion: per-sample interlayer cushion μ_{i,j}(x^i) of every block on the probe batch.

μ_{i,j}(x^i) = √n_i ‖J x^i‖ / (‖J‖_F ‖x^i‖), document 004, section 5; see
:func:`gradlens.metrics.interlayer_cushion`. The blocks are the model's declared segments
(``ModelSpec.blocks``) or modules named by the user; each maps its input x^i to its output x^j. Blocks are
evaluated in eval mode (per-sample functions: BN with running statistics), state restored afterwards.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from gradlens.metrics import cushion_summary, interlayer_cushion
from gradlens.probes.base import PROBE_BATCH, Probe, Quantity, Schedule
from gradlens.probes.layer_cushion import SUMMARY

PER_SAMPLE = ("mu", "jx_norm", "jac_fro", "jac_fro_sq_se")


class InterlayerCushion(Probe):
    """Interlayer cushions of blocks (default: every block the model declares).

    Records per block and sample ``mu``, ``jx_norm`` (‖J x‖), ``jac_fro`` (‖J‖_F) and ``jac_fro_sq_se``
    (standard error of the Hutchinson ‖J‖_F² estimate, 0 when exact), plus per block the summary of μ over
    the finite samples: ``min``, ``median``, ``mean``, ``std``, ``nonfinite``.

    Args:
        every: schedule (None: the session default).
        blocks: module names of the segments (default: ``ctx.spec.blocks``).
        method: ``"exact"``, ``"hutchinson"`` or ``"auto"`` (see the metric).
        num_probes: Hutchinson probes k.
        chunk_size: JVPs/VJPs per batched call of the exact route.
        seed: seed of the Hutchinson probes (a local generator; the same probes at every firing).
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
        name: str = "interlayer_cushion",
    ) -> None:
        super().__init__(every)
        self.blocks = None if blocks is None else list(blocks)
        self.method, self.num_probes, self.chunk_size, self.seed = method, num_probes, chunk_size, seed
        self.name = name

    def _blocks(self, ctx) -> list[str]:
        blocks = list(ctx.spec.blocks) if self.blocks is None else self.blocks
        if not blocks:
            raise ValueError(
                "InterlayerCushion found no blocks: the model declares none; pass blocks=[module names]"
            )
        for name in blocks:
            ctx.module(name)
        return blocks

    def quantities(self, ctx) -> dict[str, Quantity]:
        blocks = self._blocks(ctx)
        batch = int(ctx.probe_batch[0].shape[0])
        labels = {"layer": blocks}
        out = {q: Quantity((len(blocks), batch), ("layer", "sample"), labels) for q in PER_SAMPLE}
        out.update({q: Quantity((len(blocks),), ("layer",), labels) for q in SUMMARY})
        return out

    def compute(self, ctx) -> dict[str, torch.Tensor]:
        blocks = self._blocks(ctx)
        seen = ctx.capture(ctx.probe_batch[0], inputs=blocks, eval_mode=True)
        rows = {q: [] for q in PER_SAMPLE}
        with ctx.isolated(eval_mode=True):
            for name in blocks:
                result = interlayer_cushion(
                    ctx.module(name),
                    seen.inputs[name].detach(),
                    self.method,
                    chunk_size=self.chunk_size,
                    num_probes=self.num_probes,
                    seed=self.seed,
                )
                for q in PER_SAMPLE:
                    rows[q].append(getattr(result, q).detach())
        out = {q: torch.stack(values) for q, values in rows.items()}
        summaries = [cushion_summary(row) for row in out["mu"]]
        out.update({q: torch.stack([s[q] for s in summaries]).double() for q in SUMMARY})
        return out
