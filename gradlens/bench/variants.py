"""What each benchmark variant adds to a training step: one line per variant in ``VARIANTS``.

A variant is a setup ``(runner, folder) -> None`` that attaches its tool to the runner's model and optimizer
(closers appended to ``runner.closers``), plus the rounds it shares: ``"main"`` variants alternate with ``bare``
and each other in the same rounds; any other group name alternates with ``bare`` in rounds of its own (a third as
many: for peers that are slow or work in a background process). A variant whose probe fires every ``period``
steps times blocks of a whole number of periods (each block holds exactly one firing per period: the ratio is
then the probe's cost averaged over its schedule, not the cost of a skipped or of a firing step alone). Adding a
variant, e.g. a probe::

    "activations": Variant(probes(lambda: [ActivationStats(every=10)]), group="activations", period=10),

and, optionally, its largest accepted ratio per case in ``TARGETS``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from gradlens.probes import ActivationStats, GradStats, Probe
from gradlens.session import attach

# Per case: the largest ratio to the bare step accepted for the variants that have a target.
# ActivationStats every 10th step: <= 1.05 alone (issue 21.2); beside GradStats, GradStats' target + 0.05.
TARGETS = {
    "thin": {"gradstats": 1.05, "gradstats+exp": 1.10, "gradstats+hist40": 1.15, "activations": 1.05,
             "gradstats+activations": 1.10},
    "resnet20": {"gradstats": 1.02, "gradstats+exp": 1.03, "gradstats+hist40": 1.05, "activations": 1.05,
                 "gradstats+activations": 1.07},
    "mlp79m": {"gradstats": 1.05, "activations": 1.05, "gradstats+activations": 1.10},
}
ACTIVATION_EVERY = 10  # the schedule of the ActivationStats variants (issue 21.2: "at every 10th step")
LIGHTNING_MARGIN = 0.03  # GradStats' ratio may exceed Lightning's grad_norm ratio by this much


class Skipped(Exception):
    """A peer that cannot run here; the message says why."""


@dataclass
class Runner:
    """One variant: its model copy, optimizer, step function and what to close at the end."""

    name: str
    model: nn.Module
    optimizer: torch.optim.Optimizer
    x: torch.Tensor
    y: torch.Tensor
    after_step: Callable[[torch.Tensor], None] | None = None
    closers: list[Callable[[], None]] = field(default_factory=list)
    firings: list[float] = field(default_factory=list)  # seconds of each probe firing (compute and record)

    def step(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(self.model(self.x), self.y)
        loss.backward()
        self.optimizer.step()
        if self.after_step is not None:
            self.after_step(loss)

    def close(self) -> None:
        for close in reversed(self.closers):
            close()


Setup = Callable[[Runner, str], None]


@dataclass(frozen=True)
class Variant:
    """One benchmark variant: its setup, the rounds it shares (``"main"`` or a group of its own with ``bare``),
    whether it is a peer (skipped with ``--no-peers``) and the period of its probes' schedule (its group's timed
    blocks are a whole number of periods)."""

    setup: Setup
    group: str = "main"
    peer: bool = False
    period: int = 1


def probes(make: Callable[[], list[Probe]]) -> Setup:
    """A setup that attaches a recorded session with the probes ``make()`` returns; each firing is timed where it
    runs, inside ``optimizer.step()`` (a small interval, so little noise)."""

    def setup(runner: Runner, folder: str) -> None:
        session = attach(runner.model, runner.optimizer, os.path.join(folder, f"{runner.name}.h5"), probes=make())
        runner.closers.append(session.close)
        fire = session._fire

        def timed_fire() -> None:
            start = time.perf_counter()
            fire()
            runner.firings.append(time.perf_counter() - start)

        session._fire = timed_fire

    return setup


def _session(runner: Runner, folder: str) -> None:
    runner.closers.append(attach(runner.model, runner.optimizer, os.path.join(folder, "session.h5")).close)


def _lightning(runner: Runner, folder: str) -> None:
    try:
        from lightning.pytorch.utilities import grad_norm
    except ImportError as error:
        raise Skipped(f"lightning is not installed ({error})") from None
    kept: dict = {}

    def hook(optimizer: torch.optim.Optimizer, args: tuple, kwargs: dict) -> None:
        kept.update(grad_norm(runner.model, norm_type=2))  # what LightningModule.on_before_optimizer_step does

    runner.closers.append(runner.optimizer.register_step_pre_hook(hook).remove)


def _tensorboard(runner: Runner, folder: str) -> None:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as error:
        raise Skipped(f"tensorboard is not installed ({error})") from None
    writer = SummaryWriter(os.path.join(folder, "tensorboard"))
    named = list(runner.model.named_parameters())
    counter = [0]

    def hook(optimizer: torch.optim.Optimizer, args: tuple, kwargs: dict) -> None:
        for name, parameter in named:
            if parameter.grad is not None:
                writer.add_histogram(name, parameter.grad, counter[0])
        counter[0] += 1

    runner.closers.append(writer.close)
    runner.closers.append(runner.optimizer.register_step_pre_hook(hook).remove)


def _wandb(runner: Runner, folder: str) -> None:
    os.environ.update(WANDB_MODE="offline", WANDB_DIR=folder, WANDB_SILENT="true")
    try:
        import wandb
    except ImportError as error:
        raise Skipped(f"wandb is not installed ({error})") from None
    settings = wandb.Settings(mode="offline", silent=True, console="off", x_disable_stats=True, disable_git=True)
    run = wandb.init(project="gradlens-bench", dir=folder, settings=settings, reinit="finish_previous")
    wandb.watch(runner.model, log="gradients", log_freq=1)
    runner.after_step = lambda loss: run.log({"loss": float(loss.detach())})
    runner.closers.append(wandb.teardown)  # last: ends wandb's service process, which would busy later cases
    runner.closers.append(run.finish)
    runner.closers.append(lambda: wandb.unwatch(runner.model))


# The variants with targets and Lightning's cheap grad_norm share rounds; TensorBoard (tens of times a thin step)
# and wandb (a background process) alternate with bare in rounds of their own; so do the ActivationStats variants,
# whose blocks are whole periods of their schedule. "session" is for the memory figures only (group None: never
# timed).
VARIANTS: dict[str, Variant] = {
    "bare": Variant(lambda runner, folder: None),
    "gradstats": Variant(probes(lambda: [GradStats()])),
    "gradstats+exp": Variant(probes(lambda: [GradStats(exponents=True)])),
    "gradstats+hist40": Variant(probes(lambda: [GradStats(bins=40)])),
    "activations": Variant(probes(lambda: [ActivationStats(every=ACTIVATION_EVERY)]), group="activations",
                           period=ACTIVATION_EVERY),
    "gradstats+activations": Variant(probes(lambda: [GradStats(), ActivationStats(every=ACTIVATION_EVERY)]),
                                     group="activations", period=ACTIVATION_EVERY),
    "lightning": Variant(_lightning, peer=True),
    "tensorboard": Variant(_tensorboard, group="tensorboard", peer=True),
    "wandb": Variant(_wandb, group="wandb", peer=True),
    "session": Variant(_session, group=""),
}


def groups(names: list[str] | None = None) -> list[list[str]]:
    """The rounds to run: ``bare`` with the main variants first, then ``bare`` with each other group."""
    chosen = [n for n in VARIANTS if n != "bare" and (names is None or n in names) and VARIANTS[n].group]
    order = ["main"] + sorted({VARIANTS[n].group for n in chosen} - {"main"})
    return [["bare", *[n for n in chosen if VARIANTS[n].group == group]] for group in order]
