"""UpdateRatio: how far each optimizer step moves each parameter, relative to its size.

For a parameter w (rows labelled like :class:`~gradlens.probes.GradStats`: every trainable parameter by its
qualified name, or with ``params="weights"`` the layer weights by layer name) and the update
Δw = w_after − w_before of one real ``optimizer.step()``, one record holds

- ``update_norm``  = ‖Δw‖₂
- ``weight_norm``  = ‖w_before‖₂
- ``ratio``        = ‖Δw‖₂ / ‖w_before‖₂   (the "update/weight ratio"; ~1e-3 is a common rule of thumb for SGD)

measured around the step the optimizer really takes (weight decay, momentum, Adam's moments, LBFGS's line
search included). For plain SGD, Δw = −lr·g exactly up to rounding, so ``update_norm`` = lr·‖g‖.

Cost: one copy of the covered parameters at every firing (same memory as the parameters), made before the
step and released after it, plus one subtraction and two norms per parameter. Opt-in; fire it every N steps
(``UpdateRatio(every=100)``) on large models. A step the optimizer skips (e.g. AMP's GradScaler found
non-finite gradients and never called ``optimizer.step()``) records nothing.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from gradlens.probes.base import Probe, Quantity, Schedule, check_coverage, covered_parameters

QUANTITIES = ("update_norm", "weight_norm", "ratio")


class UpdateRatio(Probe):
    """Per-parameter ‖Δw‖, ‖w‖ (before the step) and their ratio, around each scheduled optimizer step.

    Args:
        every: schedule (None: the session default).
        params: ``"all"`` (every trainable parameter, by qualified name) or ``"weights"`` (the session's layer
            weights, by layer module name).
        name: the HDF5 group name (default ``"update_ratio"``).
    """

    measures_update = True

    def __init__(
        self,
        every: int | Iterable[int] | Schedule | None = None,
        params: str = "all",
        name: str = "update_ratio",
    ) -> None:
        super().__init__(every)
        check_coverage("UpdateRatio", params)
        self.name = name
        self.params = params
        self.uses_layers = params == "weights"
        self._before: list[torch.Tensor] | None = None

    def _covered(self, ctx) -> list[tuple[str, torch.Tensor]]:
        return covered_parameters(ctx, self.params)

    def quantities(self, ctx) -> dict[str, Quantity]:
        names = [label for label, _ in self._covered(ctx)]
        return {q: Quantity((len(names),), ("layer",), {"layer": names}) for q in QUANTITIES}

    def before_step(self, ctx) -> None:
        self._before = [p.detach().clone() for _, p in self._covered(ctx)]

    def after_step(self, ctx) -> dict[str, torch.Tensor]:
        if self._before is None:
            raise RuntimeError("UpdateRatio.after_step without before_step: no weights from before the step")
        before, self._before = self._before, None
        after = [p.detach() for _, p in self._covered(ctx)]
        # float64 differences: Δw of a float32 parameter is exact in float64
        update = torch.stack(
            [torch.linalg.vector_norm(a.double() - b.double()) for a, b in zip(after, before, strict=True)]
        )
        weight = torch.stack([torch.linalg.vector_norm(b.double()) for b in before])
        return {"update_norm": update, "weight_norm": weight, "ratio": update / weight}

    def compute(self, ctx) -> dict[str, torch.Tensor]:
        return self.after_step(ctx)
