"""Callbacks that attach gradlens inside training frameworks.

- :mod:`gradlens.integrations.lightning`: ``GradlensCallback`` for ``lightning.pytorch.Trainer``
  (install ``gradlens[lightning]``).
- :mod:`gradlens.integrations.transformers`: ``GradlensCallback`` for the Hugging Face ``transformers.Trainer``
  (install ``gradlens[transformers]``).

Each is imported only when used, so ``import gradlens`` never imports a framework.
"""

from __future__ import annotations

import torch


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
