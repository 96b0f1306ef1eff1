"""``GradlensCallback`` for ``lightning.pytorch.Trainer``: probes, the loss and the learning rate in one file.

Usage::

    from gradlens.integrations.lightning import GradlensCallback
    from gradlens.probes import GradStats

    trainer = lightning.pytorch.Trainer(callbacks=[GradlensCallback("run.h5", probes=[GradStats()])])
    trainer.fit(module, loader)

At fit start the callback attaches the probes to the ``LightningModule`` and to its (single) optimizer, on every
rank, with the same arguments: under the DDP or FSDP strategies the session's writer rank (0) writes the file
and the others write nothing (see :mod:`gradlens.distributed`). A ``GradScaler`` of the trainer's precision
plugin (``precision="16-mixed"``) is passed on, so steps the scaler skips are recorded (``step_skipped``).

After each optimizer step it logs, at that step:

- ``loss``: the loss whose gradient the step used — the sum of ``training_step``'s losses over the step's
  micro-batches as Lightning normalises them (``loss / accumulate_grad_batches``), i.e. their mean, averaged
  over ranks (one small all-reduce per step under DDP, joined by every rank);
- ``lr`` (``lr_0``, ``lr_1``, ... for several parameter groups): the learning rate the step used, read just
  before ``optimizer.step()`` (a per-step scheduler has not moved it yet).

The file is closed with status ``finished`` at fit end and ``failed`` when Lightning reports an exception.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence

import lightning.pytorch as pl
import torch

from gradlens.integrations import AttachSettings, inner_optimizer, learning_rates
from gradlens.probes.base import Probe, Schedule
from gradlens.session import Session


class GradlensCallback(pl.Callback):
    """Attach gradlens probes to a Lightning fit.

    Args:
        path: the HDF5 file the writer rank writes.
        probes: probe instances, e.g. ``[GradStats()]``.
        every: default schedule of probes created without one.
        probe_batch: a fixed ``(x, y)`` batch for probes that evaluate the model.
        loss_fn: ``loss_fn(output, y)`` for those probes (cross-entropy by default).
        log_loss: log the training loss at every optimizer step.
        log_lr: log the learning rate at every optimizer step.
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
        *,
        log_loss: bool = True,
        log_lr: bool = True,
        **attach_kwargs: object,
    ) -> None:
        super().__init__()
        self.settings = AttachSettings(path, probes, every, probe_batch, loss_fn, dict(attach_kwargs))
        self.log_loss = log_loss
        self.log_lr = log_lr
        self.session: Session | None = None
        self._losses: list[torch.Tensor] = []
        self._rates: dict[str, float] = {}
        self._global_step = 0

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Attach to the module and its optimizer (every rank, same arguments)."""
        if isinstance(trainer.strategy, pl.strategies.FSDPStrategy):
            raise ValueError(
                "GradlensCallback cannot read gradients under Lightning's FSDPStrategy (FSDP1: each rank holds "
                "shards of flat parameters that gradlens cannot attribute to parameters); use "
                "strategy=ModelParallelStrategy (FSDP2, DTensor gradients), DDP, or a single device"
            )
        optimizers = trainer.optimizers
        if len(optimizers) != 1:
            raise ValueError(
                f"GradlensCallback observes one optimizer, but {type(pl_module).__name__}.configure_optimizers "
                f"returned {len(optimizers)}; attach gradlens.attach(module, optimizer, ...) yourself to the one "
                "to observe"
            )
        self._losses.clear()
        self._global_step = trainer.global_step
        self.session = self.settings.attach(
            pl_module,
            optimizers[0],
            framework="lightning",
            details={
                "strategy": type(trainer.strategy).__name__,
                "precision": str(trainer.precision),
                "accumulate_grad_batches": int(trainer.accumulate_grad_batches),
            },
            scaler=getattr(trainer.precision_plugin, "scaler", None),
        )

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        """Remember the learning rates this step uses."""
        if self.log_lr:
            self._rates = learning_rates(inner_optimizer(optimizer))

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: object, batch: object, batch_idx: int
    ) -> None:
        """Collect the batch loss; after an optimizer step, log loss and learning rate at that step."""
        if self.session is None:
            return
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if self.log_loss and isinstance(loss, torch.Tensor):
            loss = loss.detach().reshape(())
            # half-precision losses are summed in float32; float32/float64 ones as they are
            self._losses.append(loss.float() if loss.dtype in (torch.float16, torch.bfloat16) else loss)
        if trainer.global_step == self._global_step:
            return  # accumulating: the optimizer has not stepped in this batch
        self._global_step = trainer.global_step
        scalars: dict[str, float] = dict(self._rates) if self.log_lr else {}
        if self._losses:
            total = torch.stack(self._losses).sum()
            scalars["loss"] = float(trainer.strategy.reduce(total, reduce_op="mean"))
        self._losses.clear()
        if scalars:
            self.session.log(step=max(self.session.step - 1, 0), **scalars)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Close the file with status ``finished``."""
        self._close("finished")

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        """Close the file with status ``failed`` (noting rank and step on the exception in a multi-process run);
        the exception goes on to the caller."""
        if self.session is not None:
            self.session.fail(exception)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Safety net: a session still open at teardown is closed as ``finished``."""
        if stage == "fit":
            self._close("finished")

    def _close(self, status: str) -> None:
        if self.session is not None:
            self.session.close(status=status)
