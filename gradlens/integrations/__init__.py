"""Callbacks that attach gradlens inside training frameworks.

- :mod:`gradlens.integrations.lightning`: ``GradlensCallback`` for ``lightning.pytorch.Trainer``
  (install ``gradlens[lightning]``).
- :mod:`gradlens.integrations.transformers`: ``GradlensCallback`` for the Hugging Face ``transformers.Trainer``
  (install ``gradlens[transformers]``).

Each is imported only when used, so ``import gradlens`` never imports a framework.

What both record besides the probes: the framework's own logged scalars, at the framework's step numbers, and
the run's clip and accumulation settings in the ``meta`` passed to :func:`gradlens.attach` (stored under
``run.meta["config"]``):

- ``meta["clipping"] = {"max_norm": float | None, "norm_type": float, "algorithm": "norm" | "value" | None,
  "source": "lightning" | "transformers"}``: the threshold the framework clips at (None: no clipping; for
  ``"value"`` each entry is clamped to ±max_norm), the p of the norm clipped by (2.0 in both frameworks), and
  which framework's settings these are (see :func:`clipping`);
- ``meta["accumulation_steps"] = int``: micro-batches per optimizer step.

Step numbers (one convention for both): a record at step s is what the framework's own logs call step s, so
a file lines up with the framework's logs, checkpoints and evaluations without an offset. The frameworks count
differently: Lightning numbers the optimizer step being taken by ``trainer.global_step`` *before* it (its loggers
write the first step's metrics at step 0), the Hugging Face Trainer by ``state.global_step`` *after* it (its
``log_history`` and ``checkpoint-s`` say step 1 for the first update). A plain session numbers steps from 0, so
the Trainer's step k used to be stored as gradlens step k − 1; each callback now starts the session's count at
the framework's number of its first step (:meth:`AttachSettings.attach`, ``first_step``), which also keeps the
numbering of a resumed fit.
"""

from __future__ import annotations

import os
import warnings
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
        settings: Mapping[str, object],
        first_step: int | None,
        scaler: object | None = None,
    ) -> Session:
        """Attach to ``model`` and the optimizer inside ``optimizer``'s framework wrappers.

        The framework's GradScaler (if any) is used unless the user passed ``scaler=``; ``meta[framework]``
        records ``details`` (strategy, precision, ...) unless the user's ``meta`` has that key; ``settings``
        (``clipping``, ``accumulation_steps``) go into ``meta`` as they are. With ``first_step`` the session
        numbers the first optimizer step as the framework does (:meth:`start_at`; None: the caller does it later,
        once the framework knows).

        Raises:
            ValueError: the user's ``meta`` has a key of ``settings``, or ``resume_step`` disagrees with
                ``first_step``.
        """
        from gradlens.session import attach

        kwargs = dict(self.attach_kwargs)
        if scaler is not None:
            kwargs.setdefault("scaler", scaler)
        meta = dict(kwargs.pop("meta", None) or {})
        taken = sorted(key for key in settings if key in meta)
        if taken:
            raise ValueError(
                f"meta keys {taken} are written by the {framework} callback (the trainer's settings); rename yours"
            )
        meta.setdefault(framework, dict(details))
        meta.update(settings)
        session = attach(
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
        if first_step is not None:
            self.start_at(session, first_step, framework)
        return session

    def start_at(self, session: Session, first_step: int, framework: str) -> None:
        """Number the session's next optimizer step ``first_step``, the framework's number of it (before any
        step is taken).

        Raises:
            ValueError: the user's ``resume_step`` continues at another step (nothing is recorded yet).
        """
        resume = self.attach_kwargs.get("resume_step")
        if resume is not None and int(str(resume)) + 1 != int(first_step):
            raise ValueError(
                f"resume_step={resume} continues at step {int(str(resume)) + 1}, but the {framework} trainer's "
                f"next step is {first_step}; pass resume_step={int(first_step) - 1}"
            )
        # Until attach takes a first step of its own, the session's documented counter is set here.
        session.step = int(first_step)


def clipping(max_norm: float | None, algorithm: str | None, source: str) -> dict:
    """``meta["clipping"]``: ``max_norm`` None or ≤ 0 means the framework does not clip (both skip clipping
    then); a positive threshold without an algorithm clips by norm (both frameworks' default). ``norm_type`` is
    2.0: both clip with ``torch.nn.utils.clip_grad_norm_``'s default Euclidean norm."""
    clips = max_norm is not None and float(max_norm) > 0
    return {
        "max_norm": float(max_norm) if clips else None,
        "norm_type": 2.0,
        "algorithm": (algorithm or "norm") if clips else None,
        "source": source,
    }


def record_warning(session: Session, source: str, message: str) -> None:
    """A ``warning`` event in the session's file at its current step (the file says what it does not hold)."""
    if not session.recording:
        return
    try:
        session.recorder.log_event(session.step, "warning", source, message)
    except Exception as error:  # the file never ends the run; say it on the console instead
        warnings.warn(f"gradlens could not record a warning event ({error}): {message}", stacklevel=2)


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


def record_scalars(session: Session, step: int, scalars: Mapping[str, object], refused: set[str], source: str) -> None:
    """Log what a framework logged at ``step``; a scalar the file cannot hold (a name over 64 bytes, a value
    that is not a real number) is left out and named once (``refused``) in a ``warning`` event, the others are
    recorded, and nothing is raised into the training loop."""
    try:
        session.log(step, **scalars)
        return
    except (TypeError, ValueError):
        pass  # one scalar the file cannot hold: record the others one by one, name the refused one
    for name, value in scalars.items():
        try:
            session.log(step, **{name: value})
        except (TypeError, ValueError) as error:
            if name not in refused:
                refused.add(name)
                record_warning(session, source, f"logged metric {name!r} is not recorded: {error}")
