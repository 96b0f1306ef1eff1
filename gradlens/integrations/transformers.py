"""``GradlensCallback`` for the Hugging Face ``transformers.Trainer``: probes, the loss and the learning rate.

Usage::

    from gradlens.integrations.transformers import GradlensCallback
    from gradlens.probes import GradStats

    trainer = transformers.Trainer(model=model, args=args, train_dataset=data,
                                   callbacks=[GradlensCallback("run.h5", probes=[GradStats()])])
    trainer.train()

At train begin the callback attaches the probes to the model and to the optimizer inside accelerate's
``AcceleratedOptimizer``, on every process with the same arguments: under DDP/FSDP the session's writer rank (0)
writes the file, the other ranks write nothing (see :mod:`gradlens.distributed`). The optimizer's
``GradScaler`` (``fp16=True``) is passed on, so steps the scaler skips are recorded (``step_skipped``).

Whenever the Trainer logs (every ``logging_steps`` optimizer steps) the callback records, at the last
optimizer step of the logging window:

- ``loss``: the Trainer's logged loss — the mean over the window's steps and over processes, exactly as
  ``Trainer`` computes it (with ``logging_nan_inf_filter`` on, its default, a NaN/Inf step loss is replaced
  by the running mean before averaging; ``logging_steps=1`` and the filter off give every step's own loss);
- ``lr``: the learning rate the last step used;
- ``grad_norm``: the Trainer's gradient norm before clipping, when it computes one.

The file is closed with status ``finished`` at train end. The Trainer has no exception callback: use the
callback as a context manager around ``trainer.train()`` to close the file with status ``failed`` when training
raises (without it, the file keeps every flushed record and its status stays ``running``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence

import torch
import transformers

from gradlens.integrations import AttachSettings
from gradlens.probes.base import Probe, Schedule
from gradlens.session import Session

LOGGED = {"loss": "loss", "learning_rate": "lr", "grad_norm": "grad_norm"}


class GradlensCallback(transformers.TrainerCallback):
    """Attach gradlens probes to a Hugging Face ``Trainer`` run.

    Args:
        path: the HDF5 file the writer rank writes.
        probes: probe instances, e.g. ``[GradStats()]``.
        every: default schedule of probes created without one.
        probe_batch: a fixed ``(x, y)`` batch for probes that evaluate the model.
        loss_fn: ``loss_fn(output, y)`` for those probes.
        **attach_kwargs: passed to :func:`gradlens.attach` (``meta``, ``overwrite``, ``flush_every``,
            ``writer_rank``, ``scaler``, ...).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        probes: Sequence[Probe] = (),
        every: int | Iterable[int] | Schedule = 1,
        probe_batch: tuple[torch.Tensor, torch.Tensor] | None = None,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        **attach_kwargs: object,
    ) -> None:
        self.settings = AttachSettings(path, probes, every, probe_batch, loss_fn, dict(attach_kwargs))
        self.session: Session | None = None

    def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs) -> None:
        """Attach to the model and its optimizer (every process, same arguments)."""
        if model is None or optimizer is None:
            raise ValueError("the Trainer passed no model/optimizer to GradlensCallback.on_train_begin")
        self.session = self.settings.attach(
            model,
            optimizer,
            framework="transformers",
            details={
                "version": transformers.__version__,
                "gradient_accumulation_steps": int(args.gradient_accumulation_steps),
                "logging_steps": float(args.logging_steps),
                "per_device_train_batch_size": int(args.per_device_train_batch_size),
                "global_step_at_start": int(state.global_step),
            },
            scaler=getattr(optimizer, "scaler", None),  # accelerate's AcceleratedOptimizer keeps the GradScaler
        )

    def on_log(self, args, state, control, logs=None, **kwargs) -> None:
        """Record the Trainer's loss, learning rate and gradient norm at the last step of the logging window."""
        if self.session is None or not logs or "loss" not in logs:
            return  # evaluation logs and the final summary carry no training loss of a step
        scalars = {name: float(logs[key]) for key, name in LOGGED.items() if key in logs}
        self.session.log(step=max(self.session.step - 1, 0), **scalars)

    def on_train_end(self, args, state, control, **kwargs) -> None:
        """Close the file with status ``finished``."""
        self.close("finished")

    def close(self, status: str = "finished") -> None:
        """Close the session's file (idempotent)."""
        if self.session is not None:
            self.session.close(status=status)

    def __enter__(self) -> GradlensCallback:
        return self

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: object) -> None:
        if exc is not None and self.session is not None:
            self.session.fail(exc)  # status failed; a note on the exception in a multi-process run
        else:
            self.close("finished")
