"""Mixed precision: see the steps a ``torch.amp.GradScaler`` skips.

With a GradScaler, ``scaler.step(optimizer)`` first unscales the gradients (divides them by the loss scale)
and then calls ``optimizer.step()`` only when every gradient is finite. The session's probes fire inside
``optimizer.step()``, so they read unscaled gradients; but a step the scaler skips never reaches
``optimizer.step()``, and those are the steps someone debugging fp16 needs.

:class:`ScalerWatch` wraps ``scaler.step`` of one scaler instance (the wrapper is removed at
:meth:`ScalerWatch.remove`, when the session closes). When ``scaler.step(optimizer)`` returns without the
optimizer having stepped, the scaler skipped it: the watch calls the session back, which fires the gradient
probes on the unscaled (non-finite) gradients and records a ``step_skipped`` event.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


class ScalerWatch:
    """Tells the session which ``scaler.step(optimizer)`` calls skipped the optimizer step.

    Args:
        scaler: the run's ``torch.amp.GradScaler``.
        optimizer: the optimizer the session observes; ``scaler.step`` of other optimizers passes through.
        on_skipped: called with the loss scale that found Inf/NaN, right after the scaler skipped a step
            (gradients are unscaled then).
    """

    def __init__(self, scaler: object, optimizer: torch.optim.Optimizer, on_skipped: Callable[[float], None]) -> None:
        if not isinstance(scaler, torch.amp.GradScaler):  # torch.cuda.amp.GradScaler is a subclass
            raise ValueError(
                f"scaler must be a torch.amp.GradScaler, got {type(scaler).__name__}; pass the scaler whose "
                "scaler.step(optimizer) the training loop calls, or leave scaler=None"
            )
        self.scaler = scaler
        self.optimizer = optimizer
        self.on_skipped = on_skipped
        self.skipped = 0
        self._stepped = False
        self._original = scaler.__dict__.get("step")  # an instance attribute someone else installed, if any
        self._bound = scaler.step
        scaler.step = self._step

    def optimizer_stepped(self) -> None:
        """The session calls this from its optimizer step hook: the scaler did not skip."""
        self._stepped = True

    def _step(self, optimizer: torch.optim.Optimizer, *args: object, **kwargs: object) -> object:
        if optimizer is not self.optimizer or not self.scaler.is_enabled():
            return self._bound(optimizer, *args, **kwargs)
        self._stepped = False
        # the scale this step was taken at: a tensor, read (one sync) only when the step was skipped
        scale = getattr(self.scaler, "_scale", None)
        result = self._bound(optimizer, *args, **kwargs)
        if not self._stepped:
            self.skipped += 1
            # GradScaler has already synchronised (found_inf.item()) to decide; one more read costs nothing
            self.on_skipped(float(scale) if scale is not None else float("nan"))
        return result

    def remove(self) -> None:
        """Restore ``scaler.step``. Idempotent."""
        if self.scaler is None:
            return
        if self._original is None:
            self.scaler.__dict__.pop("step", None)
        else:
            self.scaler.step = self._original
        self.scaler = None
