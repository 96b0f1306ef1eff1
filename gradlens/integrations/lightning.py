"""``GradlensCallback`` for ``lightning.pytorch.Trainer``: probes, loss, learning rate and what Lightning logs.

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

What Lightning logs (``self.log`` in training and validation, step- and epoch-level, ``LearningRateMonitor``,
...) is recorded as Lightning hands it to its loggers: same names (``train_loss_step``, ``train_loss_epoch``,
``val_loss``, ``epoch``), same values, same steps, as often as ``log_every_n_steps`` says. The callback adds a
logger of its own (:class:`LoggedMetrics`, ``callback.logger``) after the trainer's loggers for the fit and
removes it at teardown; with ``Trainer(logger=False)`` Lightning logs nothing, and the file gets a ``warning``
event saying so (pass ``logger=callback.logger`` to record them with no other logger). A name the callback
records itself (``loss``, ``lr``) is stored as ``lightning/<name>``.

Step numbers are Lightning's: the optimizer step taken while ``trainer.global_step == s`` is step s, where
Lightning's loggers write its metrics (a fit resumed from a checkpoint goes on with the checkpoint's count).
``meta["clipping"]`` holds ``gradient_clip_val``/``gradient_clip_algorithm`` and ``meta["accumulation_steps"]``
``accumulate_grad_batches`` (see :mod:`gradlens.integrations`).

The file is closed with status ``finished`` at fit end and ``failed`` when Lightning reports an exception.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import Logger

from gradlens.integrations import (
    AttachSettings,
    clipping,
    inner_optimizer,
    learning_rates,
    record_scalars,
    record_warning,
)
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
        log_metrics: record what Lightning logs (``self.log``) through :attr:`logger`.
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
        log_metrics: bool = True,
        **attach_kwargs: object,
    ) -> None:
        super().__init__()
        self.settings = AttachSettings(path, probes, every, probe_batch, loss_fn, dict(attach_kwargs))
        self.log_loss = log_loss
        self.log_lr = log_lr
        self.log_metrics = log_metrics
        self.logger = LoggedMetrics(self)
        self.session: Session | None = None
        self._own: set[str] = set()  # scalar names the callback records itself
        self._refused: set[str] = set()  # Lightning metric names the file refused (said once, as an event)
        self._added_logger = False
        self._losses: list[torch.Tensor] = []
        self._rates: dict[str, float] = {}
        self._global_step = 0

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """For a fit, add :attr:`logger` after the trainer's loggers (Lightning's choices that read the first
        logger, e.g. the checkpoint folder, stay as they were); with no logger, add none."""
        if stage == "fit" and self.log_metrics and trainer.loggers and self.logger not in trainer.loggers:
            trainer.loggers = [*trainer.loggers, self.logger]
            self._added_logger = True

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
        self._refused.clear()
        self._global_step = trainer.global_step
        algorithm = trainer.gradient_clip_algorithm
        self.session = self.settings.attach(
            pl_module,
            optimizers[0],
            framework="lightning",
            details={
                "strategy": type(trainer.strategy).__name__,
                "precision": str(trainer.precision),
                "accumulate_grad_batches": int(trainer.accumulate_grad_batches),
            },
            settings={
                "clipping": clipping(
                    trainer.gradient_clip_val, None if algorithm is None else algorithm.value, "lightning"
                ),
                "accumulation_steps": int(trainer.accumulate_grad_batches),
            },
            first_step=None,  # a resumed fit restores its step count after on_fit_start: see on_train_start
            scaler=getattr(trainer.precision_plugin, "scaler", None),
        )
        # attach(..., stop_on="severe"): a severe live finding stops the fit Lightning's way, not by raising
        self.session.stop_via(lambda finding: setattr(trainer, "should_stop", True))
        rates = learning_rates(inner_optimizer(optimizers[0])) if self.log_lr else {}
        self._own = ({"loss"} if self.log_loss else set()) | set(rates)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Number steps as Lightning does: the next optimizer step is ``trainer.global_step`` (restored from the
        checkpoint by now in a resumed fit); say in the file when Lightning has no logger to hand metrics to."""
        if self.session is None:
            return
        self.settings.start_at(self.session, trainer.global_step, "lightning")
        self._global_step = trainer.global_step
        if self.log_metrics and self.logger not in trainer.loggers:
            record_warning(
                self.session,
                "lightning",
                "Trainer(logger=False) sends self.log metrics to no logger: none are recorded (pass "
                "logger=callback.logger, or any logger, to record what Lightning logs)",
            )

    def record_logged(self, metrics: Mapping[str, object], step: int | None) -> None:
        """Record metrics as Lightning hands them to its loggers (:class:`LoggedMetrics`), at Lightning's step.

        A metric the file cannot hold (a name over 64 bytes, a value that is not a real number) is left out and
        named once in a ``warning`` event; the others are recorded and training goes on.
        """
        if self.session is None:
            return
        at = max(self.session.step - 1, 0) if step is None else int(step)
        scalars = {f"lightning/{name}" if name in self._own else str(name): value for name, value in metrics.items()}
        record_scalars(self.session, at, scalars, self._refused, "lightning")

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
        """Safety net: a session still open at teardown is closed as ``finished``; the trainer gets its own
        loggers back."""
        if stage == "fit":
            self._close("finished")
            if self._added_logger:
                trainer.loggers = [logger for logger in trainer.loggers if logger is not self.logger]
                self._added_logger = False

    def _close(self, status: str) -> None:
        if self.session is not None:
            self.session.close(status=status)


class LoggedMetrics(Logger):
    """A Lightning logger that records what Lightning logs into the callback's file (one per callback,
    ``callback.logger``): Lightning calls :meth:`log_metrics` with its own names, values and steps."""

    def __init__(self, callback: GradlensCallback) -> None:
        super().__init__()
        self._callback = callback

    @property
    def name(self) -> str:
        """The logger's name (Lightning's folders read only the first logger's)."""
        return "gradlens"

    @property
    def version(self) -> str:
        """No versions: the callback's file is the record."""
        return ""

    def log_hyperparams(self, params: object, *args: object, **kwargs: object) -> None:
        """Nothing: the file's metadata holds the run's settings."""

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Record ``metrics`` at Lightning's ``step`` (:meth:`GradlensCallback.record_logged`)."""
        self._callback.record_logged(metrics, step)
