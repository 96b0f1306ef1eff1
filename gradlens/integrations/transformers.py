"""``GradlensCallback`` for the Hugging Face ``transformers.Trainer``: probes and every number the Trainer logs.

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

Whenever the Trainer logs, the callback records every number of that log, as the Trainer appends it to its
``state.log_history``, at the entry's step (``state.global_step``), under the Trainer's name (``learning_rate``
as ``lr``):

- training logs (every ``logging_steps`` updates): ``loss`` — the mean over the window's steps and over
  processes, exactly as ``Trainer`` computes it (with ``logging_nan_inf_filter`` on, its default, a NaN/Inf
  step loss is replaced by the running mean before averaging; ``logging_steps=1`` and the filter off give
  every step's own loss) —, ``lr`` (the rate the last step used), ``grad_norm`` (before clipping, when the
  Trainer computes one), ``epoch``;
- evaluation logs: ``eval_loss``, the ``compute_metrics`` results (``eval_accuracy``, ...), ``eval_runtime``, ...;
- the final summary: ``train_loss``, ``train_runtime``, ``total_flos``, ...

Step numbers are the Trainer's: its k-th update is step k (``state.global_step`` after it, the step of
``log_history`` and of ``checkpoint-k``), for the probes too, so a gradient and the loss logged with it share a
step; a resumed training goes on from the checkpoint's count. (A plain session counts from 0, so without this
the Trainer's step k was stored as step k − 1.) ``meta["clipping"]`` holds ``max_grad_norm`` and
``meta["accumulation_steps"]`` ``gradient_accumulation_steps`` (see :mod:`gradlens.integrations`).

The file is closed with status ``finished`` at train end. The Trainer has no exception callback: use the
callback as a context manager around ``trainer.train()`` to close the file with status ``failed`` when training
raises (without it, the file keeps every flushed record and its status stays ``running``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence

import torch
import transformers

from gradlens.integrations import AttachSettings, clipping, record_scalars
from gradlens.probes.base import Probe, Schedule
from gradlens.session import Session

RENAMED = {"learning_rate": "lr"}  # the Trainer's log name -> the name gradlens records (as the Lightning callback)


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
        self._refused: set[str] = set()  # log names the file refused (said once, as an event)

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
            settings={
                "clipping": clipping(args.max_grad_norm, "norm", "transformers"),
                "accumulation_steps": int(args.gradient_accumulation_steps),
            },
            first_step=int(state.global_step) + 1,  # the Trainer's number of the coming update
            scaler=getattr(optimizer, "scaler", None),  # accelerate's AcceleratedOptimizer keeps the GradScaler
        )
        self.session.stop_via(lambda finding: None)  # stop_on: on_step_end asks the Trainer to stop

    def on_step_end(self, args, state, control, **kwargs) -> None:
        """With ``stop_on="severe"``, a severe finding of the live doctor ends training the Trainer's way."""
        if self.session is not None and self.session.stop_reason is not None:
            control.should_training_stop = True

    def on_log(self, args, state, control, logs=None, **kwargs) -> None:
        """Record every number of the log at the Trainer's step (the entry it appends to ``log_history``); a
        number the file cannot hold is named in a ``warning`` event instead (:func:`record_scalars`)."""
        if self.session is None or not logs:
            return
        scalars = {
            RENAMED.get(key, key): value
            for key, value in logs.items()
            if isinstance(value, int | float) and not isinstance(value, bool)
        }
        if scalars:
            record_scalars(self.session, int(state.global_step), scalars, self._refused, "transformers")

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
