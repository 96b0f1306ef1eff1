"""Callbacks that attach gradlens inside training frameworks.

- :mod:`gradlens.integrations.lightning`: ``GradlensCallback`` for ``lightning.pytorch.Trainer``
  (install ``gradlens[lightning]``).
- :mod:`gradlens.integrations.transformers`: ``GradlensCallback`` for the Hugging Face ``transformers.Trainer``
  (install ``gradlens[transformers]``).

Each is imported only when used, so ``import gradlens`` never imports a framework.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from gradlens.probes.base import Probe, Schedule
    from gradlens.session import Session


@dataclass
class AttachSettings:
    """What a framework callback passes to :func:`gradlens.attach` once the framework hands it the model and
    optimizer (at fit/train start): the arguments the user gave the callback."""

    path: str | os.PathLike
    probes: Sequence[Probe] = ()
    every: int | Iterable[int] | Schedule = 1
    probe_batch: tuple[torch.Tensor, torch.Tensor] | None = None
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
    attach_kwargs: dict = field(default_factory=dict)

    def attach(
        self,
        model: torch.nn.Module,
        optimizer: object,
        *,
        framework: str,
        details: Mapping[str, object],
        scaler: object | None = None,
    ) -> Session:
        """Attach to ``model`` and the optimizer inside ``optimizer``'s framework wrappers.

        The framework's GradScaler (if any) is used unless the user passed ``scaler=``; ``meta[framework]``
        records ``details`` (strategy, precision, accumulation, ...) unless the user's ``meta`` has that key.
        """
        from gradlens.session import attach

        kwargs = dict(self.attach_kwargs)
        if scaler is not None:
            kwargs.setdefault("scaler", scaler)
        meta = dict(kwargs.pop("meta", None) or {})
        meta.setdefault(framework, dict(details))
        return attach(
            model,
            inner_optimizer(optimizer),
            os.fspath(self.path),
            list(self.probes),
            self.every,
            self.probe_batch,
            self.loss_fn,
            meta=meta,
            **kwargs,
        )


def inner_optimizer(optimizer: object) -> torch.optim.Optimizer:
    """The ``torch.optim.Optimizer`` inside framework wrappers (accelerate's ``AcceleratedOptimizer``,
    Lightning's ``LightningOptimizer``): probes hook the optimizer whose ``step`` updates the weights."""
    seen = 0
    while seen < 8:
        inner = getattr(optimizer, "optimizer", None)
        if inner is None:
            inner = getattr(optimizer, "_optimizer", None)
        if not isinstance(inner, torch.optim.Optimizer) or inner is optimizer:
            break
        optimizer, seen = inner, seen + 1
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"expected a torch.optim.Optimizer (or a wrapper of one), got {type(optimizer).__name__}")
    return optimizer


def learning_rates(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """``{"lr": ...}`` for one parameter group, ``{"lr_0": ..., "lr_1": ...}`` for several."""
    rates = [float(group["lr"]) for group in optimizer.param_groups]
    if len(rates) == 1:
        return {"lr": rates[0]}
    return {f"lr_{i}": rate for i, rate in enumerate(rates)}
