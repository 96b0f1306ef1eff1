"""Run one scenario: build data and model from :class:`Knobs`, train with gradlens attached as a user would
(``GradStats`` and ``UpdateRatio`` every step, the real ``ActivationStats`` probe, the loss logged, the live
doctor checking every ``LIVE_EVERY`` steps, ``clip_grad_norm_`` captured by the session itself), and measure in
the scenario itself, independently of gradlens, what its ground truth needs: the loss at every step, each
activation module's dead and saturated fractions computed directly from its outputs (:class:`ActivationMonitor`,
the scenario's own forward hooks), the pre-clip norms ``clip_grad_norm_`` returned.

The live doctor's cost is measured by wrapping its engine (:class:`TimedEngine`: CPU seconds of every call the
session makes into it, feeding included); its findings are the run file's ``finding`` events.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

import gradlens
from benchmarks.doctor.models import MLP, ConvBN, Discriminator, Generator, TinyTransformer, initialise
from gradlens.doctor import LiveDoctor
from gradlens.probes import ActivationStats, GradStats, UpdateRatio
from gradlens.probes.base import GRADS, Probe, Quantity

LIVE_EVERY = 5  # the live doctor checks every 5 steps (attach(live=5))
KINDS = {nn.ReLU: "relu", nn.LeakyReLU: "leaky_relu", nn.Tanh: "tanh", nn.Sigmoid: "sigmoid", nn.GELU: "gelu",
         nn.SiLU: "silu"}


@dataclass(frozen=True)
class Knobs:
    """Everything a scenario can change; a fix maps to a change of one knob (see ``scenarios.apply_fix``)."""

    model: str = "mlp"  # mlp | cnn | resnet | transformer | gan
    data: str = "blobs"  # blobs (32-d, 10 classes) | digits (8×8, 10 classes) | tokens (length 8, 4 classes)
    depth: int = 2
    width: int = 32
    activation: str = "relu"
    init: str = "kaiming"  # default | kaiming | xavier
    init_gain: float = 1.0
    bias_init: float = 0.0
    residual: bool = False
    norm: bool = False
    optimizer: str = "sgd"  # sgd | adam | adamw
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 0.0
    batch: int = 32
    steps: int = 100
    clip: float | None = None
    schedule: str = "constant"  # constant | warmup_cosine
    accumulation: int = 1
    shuffle_labels: bool = False
    train_size: int | None = None
    val_every: int = 0
    nan_at: int | None = None
    spike_at: int | None = None
    freeze: tuple[str, ...] = ()  # module-name prefixes whose parameters get requires_grad=False
    exclude_from_optimizer: tuple[str, ...] = ()  # module-name prefixes left out of the optimizer
    zero_lr: tuple[str, ...] = ()  # module-name prefixes in a param group with lr 0
    unused_module: bool = False
    inf_every: int = 0  # AMP: an Inf loss every N steps after step 20 (the scaler skips those steps)
    amp: bool = False
    broken_probe: bool = False
    act_every: int = 1  # ActivationStats schedule (a sparse one shows the triggered detail)
    histograms: bool = False  # a GradStats(bins=16) probe every 10 steps (heavier: switched on by a trigger)
    crash_at: int | None = None
    lr_jump_at: int | None = None  # the learning rate multiplied by lr_jump from this step (a bad schedule)
    lr_jump: float = 20.0
    pretrain: int = 0  # steps trained before gradlens is attached (a converged or fine-tuned run)
    new_head: bool = False  # re-initialise the head after pretraining (fine-tuning)
    seed: int = 0


@dataclass
class Data:
    x: torch.Tensor
    y: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    classes: int


@dataclass
class Outcome:
    """What a scenario measured itself (the ground truth's inputs) and where its run file is."""

    path: str
    knobs: Knobs
    losses: np.ndarray  # [steps] training loss of each step (NaN where it was not finite)
    val: list[tuple[int, float]] = field(default_factory=list)
    act_labels: list[str] = field(default_factory=list)
    dead: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))  # [steps, layers] measured directly
    saturated: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    preclip: list[float] = field(default_factory=list)
    status: str = "finished"
    seconds: float = 0.0
    live_cpu: float = 0.0  # CPU seconds spent in the live doctor (feeding and checking)
    live_steps: int = 0  # training steps done while the live doctor watched
    cpu: float = 0.0  # CPU seconds of the whole recorded training (gradlens and the live doctor included)

    def final_loss(self) -> float:
        """Median training loss of the last tenth of the steps (validation loss when one was logged)."""
        if self.val:
            return float(self.val[-1][1])
        tail = self.losses[-max(1, len(self.losses) // 10):]
        return float(np.median(tail)) if np.isfinite(tail).any() else math.inf


def make_data(knobs: Knobs) -> Data:
    """Deterministic data: blobs (10 Gaussian classes in 32-d), digits (scikit-learn 8×8) or tokens."""
    g = torch.Generator().manual_seed(1000 + knobs.seed)
    if knobs.data == "digits":
        from gradlens.data import load_dataset

        d = load_dataset("digits")
        x, y, xv, yv, k = (d.x_train - 0.3) / 0.38, d.y_train, (d.x_test - 0.3) / 0.38, d.y_test, 10
    elif knobs.data == "tokens":
        x = torch.randint(0, 16, (2048, 8), generator=g)
        y = (x < 4).sum(dim=1).clamp(max=3)
        xv = torch.randint(0, 16, (512, 8), generator=g)
        yv = (xv < 4).sum(dim=1).clamp(max=3)
        k = 4
    else:
        k, n = 10, 2048 + 512
        centres = torch.randn(k, 32, generator=g) * 0.6
        labels = torch.randint(0, k, (n,), generator=g)
        points = centres[labels] + torch.randn(n, 32, generator=g)
        x, y, xv, yv = points[:2048], labels[:2048], points[2048:], labels[2048:]
    if knobs.train_size is not None:
        x, y = x[: knobs.train_size], y[: knobs.train_size]
    if knobs.shuffle_labels:
        y = y[torch.randperm(len(y), generator=g)]
    return Data(x, y, xv, yv, k)


def make_model(knobs: Knobs, data: Data) -> nn.Module:
    torch.manual_seed(knobs.seed)
    if knobs.model in ("cnn", "resnet"):
        model = ConvBN(data.classes, residual=knobs.model == "resnet", unused=knobs.unused_module)
        with torch.no_grad():  # bias_init shifts the BatchNorm outputs (β) in front of every ReLU
            for module in model.modules():
                if isinstance(module, nn.BatchNorm2d):
                    module.bias.fill_(knobs.bias_init)
        return model
    if knobs.model == "transformer":
        return TinyTransformer(16, data.classes, data.x.shape[1])
    model = MLP(data.x[0].numel(), data.classes, knobs.depth, knobs.width, knobs.activation, knobs.residual,
                knobs.norm, unused=knobs.unused_module)
    torch.manual_seed(knobs.seed)  # the same weights with or without an unused module
    for module in model.modules():
        if isinstance(module, nn.Linear):
            initialise(module, knobs.init, knobs.init_gain, knobs.activation, knobs.bias_init)
    return model


def _matches(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def make_optimizer(knobs: Knobs, model: nn.Module) -> torch.optim.Optimizer:
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad
             and not _matches(n, knobs.exclude_from_optimizer)]
    groups = [{"params": [p for n, p in named if not _matches(n, knobs.zero_lr)]}]
    if knobs.zero_lr:
        groups.append({"params": [p for n, p in named if _matches(n, knobs.zero_lr)], "lr": 0.0})
    if knobs.optimizer == "adam":
        return torch.optim.Adam(groups, lr=knobs.lr)
    if knobs.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=knobs.lr, weight_decay=knobs.weight_decay)
    return torch.optim.SGD(groups, lr=knobs.lr, momentum=knobs.momentum, weight_decay=knobs.weight_decay)


class ActivationMonitor:
    """Forward hooks on the activation modules: per step the contract's statistics, computed from the outputs.

    The scenario's own measurement (the ground truth), independent of gradlens's probe: its own hooks, its own
    arithmetic, the same definitions (:mod:`gradlens.metrics.activations`). Units are the features of ``[B, F]``
    outputs, the channels of ``[B, C, H, W]`` ones, the last axis of ``[B, T, H]`` ones. dead: a unit exactly
    zero for every sample (and position); saturated: tanh |y| > 0.99, sigmoid y < 0.01 or > 0.99, GELU input
    x < −3, SiLU x < −6, for every sample.
    """

    def __init__(self, model: nn.Module) -> None:
        self.modules = [(n, m) for n, m in model.named_modules() if type(m) in KINDS]
        self.labels = [n for n, _ in self.modules]
        self.kinds = {n: KINDS[type(m)] for n, m in self.modules}
        self.rows: dict[int, dict[str, np.ndarray]] = {}
        self.step = 0
        self._current: dict[str, list[float]] = {}
        self._handles = [m.register_forward_hook(self._hook(i)) for i, (_, m) in enumerate(self.modules)]

    def _hook(self, index: int):
        kind = KINDS[type(self.modules[index][1])]

        @torch.no_grad()
        def hook(module, inputs, output):
            if self.step in self.rows:  # keep the first micro-batch of a step
                return
            y, x = _units(output.detach().float()), _units(inputs[0].detach().float())
            dead = float((y == 0).all(dim=0).float().mean())
            if kind == "tanh":
                sat = (y.abs() > 0.99).all(dim=0)
            elif kind == "sigmoid":
                sat = ((y < 0.01) | (y > 0.99)).all(dim=0)
            elif kind == "gelu":
                sat = (x < -3).all(dim=0)
            elif kind == "silu":
                sat = (x < -6).all(dim=0)
            else:
                sat = torch.zeros(y.shape[1], dtype=torch.bool)
            self._current.setdefault("dead_fraction", [0.0] * len(self.modules))[index] = dead
            self._current.setdefault("saturated_fraction", [0.0] * len(self.modules))[index] = float(sat.float().mean())
            self._current.setdefault("mean", [0.0] * len(self.modules))[index] = float(y.mean())
            self._current.setdefault("std", [0.0] * len(self.modules))[index] = float(y.std()) if y.numel() > 1 else 0.0
            if index == len(self.modules) - 1:
                self.rows[self.step] = {q: np.asarray(v, np.float32) for q, v in self._current.items()}
                self._current = {}

        return hook

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()

    def array(self, quantity: str, steps: int) -> np.ndarray:
        out = np.full((steps, len(self.labels)), np.nan)
        for step, row in self.rows.items():
            if step < steps:
                out[step] = row[quantity]
        return out


def _units(t: torch.Tensor) -> torch.Tensor:
    """``[samples, units]``: channels of a 4-d map, the last axis of a token sequence, features otherwise."""
    if t.dim() == 4:
        return t.transpose(0, 1).flatten(1).T
    if t.dim() == 3:
        return t.flatten(0, 1)
    return t.flatten(1)


class BrokenProbe(Probe):
    """A probe that fails at every firing (the session records probe_error events and switches it off)."""

    name = "broken"
    needs = frozenset({GRADS})
    uses_layers = False

    def quantities(self, ctx):
        return {"value": Quantity((1,), ("layer",), {"layer": ["x"]})}

    def compute(self, ctx):
        raise RuntimeError("shapes differ: (3,) vs (4,)")


def _schedule(knobs: Knobs, step: int) -> float:
    if knobs.lr_jump_at is not None and step >= knobs.lr_jump_at:
        return knobs.lr_jump
    if knobs.schedule != "warmup_cosine":
        return 1.0
    warm = max(1, knobs.steps // 10)
    if step < warm:
        return (step + 1) / warm
    return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, knobs.steps - warm)))


def _pretrain(knobs: Knobs, model: nn.Module, data: Data) -> None:
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(7)
    for _ in range(knobs.pretrain):
        index = torch.randint(0, len(data.y), (64,), generator=g)
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(data.x[index]), data.y[index]).backward()
        optimizer.step()
    if knobs.new_head:
        model.head.reset_parameters()


class TimedEngine:
    """The session's live doctor (:class:`gradlens.doctor.LiveDoctor`) with the CPU time of every call counted."""

    def __init__(self, meta, layers) -> None:
        self.engine = LiveDoctor(meta, layers)
        self.cpu = 0.0

    def _timed(self, method, *args, **kwargs):
        started = time.process_time()
        try:
            return method(*args, **kwargs)
        finally:
            self.cpu += time.process_time() - started

    def observe(self, *args, **kwargs) -> None:
        self._timed(self.engine.observe, *args, **kwargs)

    def observe_scalars(self, *args, **kwargs) -> None:
        self._timed(self.engine.observe_scalars, *args, **kwargs)

    def observe_event(self, *args, **kwargs) -> None:
        self._timed(self.engine.observe_event, *args, **kwargs)

    def check(self, *args, **kwargs) -> list:
        return self._timed(self.engine.check, *args, **kwargs)


def _probes(knobs: Knobs) -> list:
    probes = [GradStats(), UpdateRatio(), ActivationStats(every=knobs.act_every)]
    if knobs.histograms:
        probes.append(GradStats(every=10, bins=16, name="histograms"))
    return probes + ([BrokenProbe()] if knobs.broken_probe else [])


def _attach(knobs: Knobs, model: nn.Module, optimizer, path: str, classes: int | None, engines: list, **kw):
    """``gradlens.attach`` as the scenarios use it: the live doctor on, its engine timed."""

    def engine(meta, layers):
        engines.append(TimedEngine(meta, layers))
        return engines[-1]

    meta = {"scenario": knobs.model, **({"num_classes": classes} if classes else {}),
            **({"accumulation_steps": knobs.accumulation} if knobs.accumulation > 1 else {})}
    return gradlens.attach(model, optimizer, path, probes=_probes(knobs), overwrite=True, meta=meta,
                           flush_every=10_000, live=LIVE_EVERY, engine=engine, **kw)


def record(knobs: Knobs, path: str) -> Outcome:
    """Train the scenario with gradlens attached, writing ``path``; return what it measured itself."""
    started = time.perf_counter()
    torch.set_num_threads(1)  # tiny tensors: thread start-up would dominate (as in the test suite)
    torch.manual_seed(knobs.seed)
    data = make_data(knobs)
    if knobs.model == "gan":
        return _record_gan(knobs, path, started)
    model = make_model(knobs, data)
    if knobs.pretrain:
        _pretrain(knobs, model, data)
    for name, parameter in model.named_parameters():
        if _matches(name, knobs.freeze):
            parameter.requires_grad_(False)
    optimizer = make_optimizer(knobs, model)
    base = [g["lr"] for g in optimizer.param_groups]
    monitor = ActivationMonitor(model)
    scaler = torch.amp.GradScaler("cpu") if knobs.amp else None
    losses = np.full(knobs.steps, np.nan)
    outcome = Outcome(path, knobs, losses)
    g = torch.Generator().manual_seed(knobs.seed + 1)
    status = "finished"
    engines: list[TimedEngine] = []
    clock = time.process_time()
    try:
        with _attach(knobs, model, optimizer, path, data.classes, engines, scaler=scaler) as session:
            for step in range(knobs.steps):
                monitor.step = step
                scale = _schedule(knobs, step)
                for group, lr in zip(optimizer.param_groups, base, strict=True):
                    group["lr"] = lr * scale
                total = 0.0
                for _ in range(knobs.accumulation):
                    index = torch.randint(0, len(data.y), (min(knobs.batch, len(data.y)),), generator=g)
                    x, y = data.x[index], data.y[index]
                    if knobs.nan_at is not None and step >= knobs.nan_at:
                        x = x.clone().float()
                        x.view(len(x), -1)[0, 0] = float("nan")
                    if knobs.spike_at == step:
                        x = x * 300.0
                    loss = nn.functional.cross_entropy(model(x), y)
                    total += float(loss.detach()) / knobs.accumulation
                    if knobs.inf_every and step >= 20 and step % knobs.inf_every == 0:
                        loss = loss * float("inf")  # the gradients overflow (the logged loss stays finite)
                    (scaler.scale(loss) if scaler else loss / knobs.accumulation).backward()
                if knobs.clip is not None:  # the session captures the call itself (clip/preclip_norm, clip/max_norm)
                    if scaler:
                        scaler.unscale_(optimizer)
                    pre = nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], knobs.clip)
                    outcome.preclip.append(float(pre))
                if scaler:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                optimizer.zero_grad()
                losses[step] = total
                outcome.live_steps = step + 1
                session.log(loss=total, lr=optimizer.param_groups[0]["lr"])
                if knobs.val_every and step % knobs.val_every == 0:
                    with torch.no_grad():
                        val = float(nn.functional.cross_entropy(model(data.x_val), data.y_val))
                    outcome.val.append((step, val))
                    session.log(val_loss=val)
                if knobs.crash_at == step:
                    raise RuntimeError(f"scenario crash at step {step}")
    except RuntimeError as error:
        if "scenario crash" not in str(error):
            raise
        status = "failed"
    finally:
        monitor.remove()
        outcome.cpu = time.process_time() - clock
    outcome.status = status
    _measured(outcome, monitor, engines, started)
    return outcome


def _measured(outcome: Outcome, monitor: ActivationMonitor, engines: list[TimedEngine], started: float) -> None:
    steps = outcome.knobs.steps
    outcome.act_labels = monitor.labels
    outcome.dead = monitor.array("dead_fraction", steps)
    outcome.saturated = monitor.array("saturated_fraction", steps)
    outcome.live_cpu = sum(e.cpu for e in engines)
    outcome.seconds = time.perf_counter() - started


def _record_gan(knobs: Knobs, path: str, started: float) -> Outcome:
    """A GAN-like loop: the discriminator and the generator, two optimizers; gradlens attached to the generator."""
    torch.manual_seed(knobs.seed)
    generator, discriminator = Generator(), Discriminator()
    opt_g = torch.optim.Adam(generator.parameters(), lr=knobs.lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=knobs.lr, betas=(0.5, 0.999))
    g = torch.Generator().manual_seed(knobs.seed + 1)
    monitor = ActivationMonitor(generator)
    losses = np.full(knobs.steps, np.nan)
    outcome = Outcome(path, knobs, losses)
    bce = nn.functional.binary_cross_entropy_with_logits
    engines: list[TimedEngine] = []
    clock = time.process_time()
    with _attach(knobs, generator, opt_g, path, None, engines) as session:
        for step in range(knobs.steps):
            monitor.step = step
            angle = torch.rand(knobs.batch, generator=g) * 2 * math.pi
            real = torch.stack([angle.cos(), angle.sin()], dim=1) * 2 + 0.05 * torch.randn(knobs.batch, 2, generator=g)
            fake = generator(torch.randn(knobs.batch, 8, generator=g))
            opt_d.zero_grad()
            loss_d = bce(discriminator(real), torch.ones(knobs.batch, 1)) + bce(
                discriminator(fake.detach()), torch.zeros(knobs.batch, 1))
            loss_d.backward()
            opt_d.step()
            opt_g.zero_grad()
            loss_g = bce(discriminator(fake), torch.ones(knobs.batch, 1))
            loss_g.backward()
            opt_g.step()
            losses[step] = float(loss_g)
            outcome.live_steps = step + 1
            session.log(loss_d=float(loss_d), loss_g=float(loss_g))
    monitor.remove()
    outcome.cpu = time.process_time() - clock
    _measured(outcome, monitor, engines, started)
    return outcome


KILLED_SCRIPT = """
import os, signal, sys
import torch
from torch import nn
import gradlens
from gradlens.probes import GradStats

torch.manual_seed(0)
torch.set_num_threads(1)
model = nn.Sequential(nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 10))
optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
x, y = torch.randn(256, 32), torch.randint(0, 10, (256,))
session = gradlens.attach(model, optimizer, sys.argv[1], probes=[GradStats()], flush_every=1)
for step in range(int(sys.argv[2])):
    optimizer.zero_grad()
    loss = nn.functional.cross_entropy(model(x[:32]), y[:32])
    loss.backward()
    optimizer.step()
    session.log(loss=loss.item())
session.flush()
os.kill(os.getpid(), signal.SIGKILL)
"""


def record_killed(path: str, steps: int = 40, repaired: bool = False) -> Outcome:
    """A run whose training process is killed with SIGKILL after ``steps`` steps (its file left ``running``, its
    lock file left by a dead holder); with ``repaired``, closed afterwards by ``gradlens repair``."""
    import subprocess
    import sys

    from gradlens.recorder import repair

    started = time.perf_counter()
    if os.path.exists(path):
        os.remove(path)
    done = subprocess.run([sys.executable, "-c", KILLED_SCRIPT, path, str(steps)], capture_output=True, text=True)
    if done.returncode != -9:
        raise RuntimeError(f"the killed scenario ended with {done.returncode}, not SIGKILL: {done.stderr[-500:]}")
    if repaired:
        repair(path, backup=False)
    outcome = Outcome(path, Knobs(steps=steps), np.full(steps, np.nan),
                      status="interrupted" if repaired else "killed")
    outcome.seconds = time.perf_counter() - started
    return outcome
