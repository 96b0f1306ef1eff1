"""A small, reusable, deterministic trainer shared by the demo and the analyses.

SGD with momentum, weight decay (in the optimizer, or as an explicit penalty term such as document 004's
‖T⁻¹(p)‖²), learning-rate milestones, float32/float64, a seed for the mini-batch order, a progress bar,
and epoch-level train/test loss and accuracy logged through a gradlens session when one is attached.

Devices (``TrainConfig.device``: ``auto``, ``cpu``, ``cuda`` or ``cuda:K``; None = wherever the model is):
the model and the whole dataset are moved to the device once, before the first step (the documents' datasets
fit in a GPU's memory: 60 000 28×28 float32 images are 188 MB); the mini-batch order is drawn on the CPU from
the seed alone, so it is the same on every device; the epoch's loss and accuracy are summed on the device
(float64 and int64, as the CPU run summed them in Python) and read once per epoch, so a step waits for the
device only when ``log_every`` asks for its loss. :func:`reproducible` holds, for the run only, the settings
that make a CUDA run repeat bit for bit with float32 kept float32 (no TF32).
"""

from __future__ import annotations

import copy
import math
import os
import platform
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from gradlens.data import Dataset, make_loader

DTYPES = {"float32": torch.float32, "float64": torch.float64}
DEVICE_NAMES = "auto, cpu, cuda or cuda:K"
_DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(?::\d+)?|meta")  # meta: for tests of the device plumbing
CUBLAS_DETERMINISTIC = ":4096:8"
"""cuBLAS's deterministic workspace setting (``CUBLAS_WORKSPACE_CONFIG``, NVIDIA's cuBLAS reproducibility notes)."""


def check_device_name(device: str) -> str:
    """``device`` when it is one of ``auto``, ``cpu``, ``cuda``, ``cuda:K`` (or ``meta``: tensors without data, for
    tests of the device plumbing; a run there stops at its first read of a value); else a ValueError naming it."""
    if not isinstance(device, str) or _DEVICE_PATTERN.fullmatch(device) is None:
        raise ValueError(f"device {device!r} is not supported; use {DEVICE_NAMES}")
    return device


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """The device a run trains on: ``auto`` is ``cuda:<current>`` when torch sees a CUDA device, else ``cpu``;
    ``cuda`` is the current CUDA device; a ``torch.device`` is taken as it is (``meta`` serves tests of the
    device plumbing).

    Raises:
        ValueError: an unknown name, or a CUDA device torch does not see (the message says what it sees).
    """
    if isinstance(device, torch.device):
        return device
    name = check_device_name(device)
    available = torch.cuda.is_available()
    if name == "meta":
        return torch.device("meta")
    if name == "auto":
        return torch.device("cuda", torch.cuda.current_device()) if available else torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    count = torch.cuda.device_count() if available else 0
    index = int(name.partition(":")[2]) if ":" in name else (torch.cuda.current_device() if count else 0)
    if index >= count:
        seen = (f"{count} CUDA device{'s' if count > 1 else ''} (cuda:0..cuda:{count - 1})" if count
                else f"no CUDA device (torch {torch.__version__})")
        raise ValueError(f"device {name!r} is not available: torch sees {seen}; use --device auto or cpu")
    return torch.device("cuda", index)


def cpu_model() -> str:
    """This machine's CPU model (``/proc/cpuinfo``'s model name where there is one)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: str | torch.device) -> str:
    """What ``device`` is: the GPU's name (``NVIDIA H100 80GB HBM3``), the CPU's model, or the device type."""
    device = resolve_device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "cpu":
        return cpu_model()
    return device.type


@contextmanager
def reproducible(device: str | torch.device) -> Iterator[None]:
    """Hold, while the block runs on a CUDA ``device``, what makes the same seed give the same run twice in
    float32 numerics; restore every setting afterwards (also on error). Nothing changes on other devices: the
    CPU kernels the trainer uses are deterministic, which the CPU test suite checks bit for bit.

    On CUDA: ``torch.use_deterministic_algorithms(True)`` (an op without a deterministic kernel raises, naming
    itself, instead of varying silently); ``cudnn.deterministic = True`` and ``cudnn.benchmark = False`` (no
    timing-based choice of convolution algorithm); ``fp32_precision = "ieee"`` for CUDA matmuls and cuDNN
    convolutions and RNNs (no TF32: float32 products keep float32's 24-bit significand, as on the CPU); and
    ``CUBLAS_WORKSPACE_CONFIG`` = :data:`CUBLAS_DETERMINISTIC` unless already set (cuBLAS reads it when the
    process makes its handle: a worker process's first run sets it in time).
    """
    device = resolve_device(device)
    if device.type != "cuda":
        yield
        return
    backends = torch.backends
    precisions = (backends.cuda.matmul, backends.cudnn.conv, backends.cudnn.rnn)
    saved = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        backends.cudnn.deterministic,
        backends.cudnn.benchmark,
        [place.fp32_precision for place in precisions],
        os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
    )
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_DETERMINISTIC)
    torch.use_deterministic_algorithms(True)
    backends.cudnn.deterministic, backends.cudnn.benchmark = True, False
    for place in precisions:
        place.fp32_precision = "ieee"
    try:
        yield
    finally:
        enabled, warn_only, deterministic, benchmark, fp32, cublas = saved
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
        backends.cudnn.deterministic, backends.cudnn.benchmark = deterministic, benchmark
        for place, value in zip(precisions, fp32, strict=True):
            place.fp32_precision = value
        if cublas is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
        else:
            os.environ["CUBLAS_WORKSPACE_CONFIG"] = cublas


def data_on(data: Dataset, device: str | torch.device) -> Dataset:
    """``data`` with its four tensors on ``device`` (the same tensors, no copy, when they are there already)."""
    device = resolve_device(device)
    moved = {name: getattr(data, name).to(device) for name in ("x_train", "y_train", "x_test", "y_test")}
    if all(moved[name] is getattr(data, name) for name in moved):
        return data
    return replace(data, **moved)


@dataclass(frozen=True)
class TrainConfig:
    """How to train.

    Attributes:
        epochs: passes over the training set.
        batch_size: mini-batch size (the last, smaller batch of an epoch is kept).
        lr: initial learning rate.
        momentum: SGD momentum.
        weight_decay: L2 coefficient given to the optimizer (0 when a ``penalty`` carries the decay).
        milestones: epochs at which the learning rate is multiplied by ``gamma``.
        gamma: learning-rate factor at each milestone.
        dtype: "float32" or "float64".
        seed: seed of the mini-batch order (a local generator; the global RNG is not touched).
        log_every: log the mini-batch training loss every this many steps (0: never); each logged loss is read
            from the device (on a GPU the step then waits for it).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:K`` (see :func:`resolve_device`); None trains wherever the
            model is.
    """

    epochs: int = 1
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 0.0
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    dtype: str = "float32"
    seed: int = 0
    log_every: int = 1
    device: str | None = None

    def __post_init__(self) -> None:
        if self.device is not None:
            check_device_name(self.device)
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype {self.dtype!r} is not supported; use one of {sorted(DTYPES)}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be >= 1, got {self.epochs} and {self.batch_size}")
        if self.lr <= 0 or not math.isfinite(self.lr):
            raise ValueError(f"lr must be a positive finite number, got {self.lr}")

    def to_dict(self) -> dict:
        """JSON-ready dict (stored in run metadata)."""
        return asdict(self)


@dataclass
class History:
    """Epoch-level results of :func:`train` (index e − 1 = after epoch e).

    ``train_loss``/``train_acc`` are running means over the epoch's mini-batches (as the documents report
    training loss); ``test_*`` are evaluated after the epoch in eval mode.
    """

    train_loss: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)
    test_loss: list[float] = field(default_factory=list)
    test_acc: list[float] = field(default_factory=list)
    penalty: list[float] = field(default_factory=list)
    steps: int = 0
    epochs_done: int = 0


def make_optimizer(model: nn.Module, config: TrainConfig, params: list | None = None) -> torch.optim.SGD:
    """SGD with the config's learning rate, momentum and weight decay over ``params`` (all by default)."""
    return torch.optim.SGD(
        model.parameters() if params is None else params,
        lr=config.lr,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
    )


@torch.no_grad()
def evaluate(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int = 1024,
    loss_fn=nn.functional.cross_entropy,
) -> tuple[float, float]:
    """Mean loss and accuracy of ``model`` on ``(x, y)`` in eval mode (train/eval flags restored).

    Batches go to the model's device (a no-op when ``x`` is there already); the sums stay there (float64 and int64)
    and are read once at the end.
    """
    modes = {m: m.training for m in model.modules()}
    model.eval()
    reference = next(model.parameters())
    dtype, device = reference.dtype, reference.device
    total_loss = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    try:
        for start in range(0, len(x), batch_size):
            xb = x[start : start + batch_size].to(device)
            xb = xb.to(dtype) if xb.is_floating_point() else xb
            out = model(xb)
            yb = y[start : start + batch_size].to(device)
            total_loss += loss_fn(out, yb, reduction="sum").double()
            correct += (out.argmax(1) == yb).sum()
    finally:
        for module, mode in modes.items():
            module.training = mode
    return float(total_loss) / len(x), int(correct) / len(x)


def train(
    model: nn.Module,
    data: Dataset,
    config: TrainConfig,
    *,
    session=None,
    optimizer: torch.optim.Optimizer | None = None,
    penalty: Callable[[nn.Module], torch.Tensor] | None = None,
    after_step: Callable[[], None] | None = None,
    loss_fn=nn.functional.cross_entropy,
    progress: bool = True,
    description: str = "train",
    checkpoint: str | os.PathLike | None = None,
    resume_from: Checkpoint | None = None,
) -> History:
    """Train ``model`` on ``data`` and log through ``session`` (a :class:`gradlens.Session`) if given.

    Args:
        model: the network; converted to ``config.dtype`` and moved to ``config.device``.
        data: train/test tensors (``gradlens.data.Dataset``), moved to the device once (:func:`data_on`).
        config: hyperparameters.
        session: logs ``train_loss`` per ``log_every`` steps, and per epoch ``epoch``, ``lr``,
            ``epoch_train_loss`` (running mean), ``train_acc``, ``test_loss``, ``test_acc`` and ``cost``
            (loss + penalty).
        optimizer: defaults to :func:`make_optimizer`; pass the one the session was attached to.
        penalty: extra term added to the loss (e.g. ``lambda m: 1e-4 * decay_penalty(m)``).
        after_step: called after every ``optimizer.step()`` (e.g. a VAN α/λ update).
        loss_fn: ``loss_fn(output, y, reduction=...)``.
        progress: show a tqdm progress bar.
        description: the progress bar's label.
        checkpoint: save a :class:`Checkpoint` here after every epoch (model, optimizer, scheduler, history),
            written atomically so a kill never leaves a half-written checkpoint.
        resume_from: continue from this checkpoint (see :func:`load_checkpoint`); attach the session with
            ``resume_step=checkpoint.history.steps - 1`` so records after it are dropped.
    """
    dtype = DTYPES[config.dtype]
    device = next(model.parameters()).device if config.device is None else resolve_device(config.device)
    model.to(device=device, dtype=dtype)
    data = data_on(data, device)
    optimizer = optimizer or make_optimizer(model, config)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(config.milestones), config.gamma)
    history = History()
    if resume_from is not None:
        model.load_state_dict(resume_from.model)
        optimizer.load_state_dict(resume_from.optimizer)
        scheduler.load_state_dict(resume_from.scheduler)
        history = copy.deepcopy(resume_from.history)

    def log_epoch(epoch: int, train_loss: float, train_acc: float, penalty_value: float) -> None:
        test_loss, test_acc = evaluate(model, data.x_test, data.y_test, loss_fn=loss_fn)
        history.train_loss.append(train_loss)
        history.train_acc.append(train_acc)
        history.test_loss.append(test_loss)
        history.test_acc.append(test_acc)
        history.penalty.append(penalty_value)
        if session is not None:
            session.log(
                epoch=epoch,
                lr=optimizer.param_groups[0]["lr"],
                epoch_train_loss=train_loss,
                train_acc=train_acc,
                test_loss=test_loss,
                test_acc=test_acc,
                cost=train_loss + penalty_value,
            )

    def penalty_now() -> float:
        if penalty is None:
            return 0.0
        with torch.no_grad():
            return float(penalty(model))

    steps_per_epoch = math.ceil(len(data.x_train) / config.batch_size)
    bar = tqdm(
        total=config.epochs * steps_per_epoch,
        initial=history.steps,
        desc=description,
        disable=not progress,
        leave=False,
    )
    with reproducible(device), bar:
        loader = make_loader(data.x_train, data.y_train, config.batch_size, shuffle=True, seed=config.seed)
        for epoch in range(history.epochs_done, config.epochs):
            model.train()
            loader.set_epoch(epoch)
            # summed on the device, read once per epoch (float64/int64: the sums a Python float and int made)
            loss_sum = torch.zeros((), dtype=torch.float64, device=device)
            correct = torch.zeros((), dtype=torch.int64, device=device)
            seen = 0
            for xb, yb in loader:
                optimizer.zero_grad(set_to_none=True)
                out = model(xb.to(dtype) if xb.is_floating_point() else xb)
                loss = loss_fn(out, yb)
                total = loss if penalty is None else loss + penalty(model)
                total.backward()
                optimizer.step()
                if after_step is not None:
                    after_step()
                history.steps += 1
                loss_sum += loss.detach().double() * len(yb)
                correct += (out.detach().argmax(1) == yb).sum()
                seen += len(yb)
                if session is not None and config.log_every and (history.steps - 1) % config.log_every == 0:
                    session.log(train_loss=loss.item())
                bar.update()
            scheduler.step()
            log_epoch(epoch + 1, float(loss_sum) / seen, int(correct) / seen, penalty_now())
            history.epochs_done = epoch + 1
            if checkpoint is not None:
                if session is not None:
                    _commit_records(session)  # before the checkpoint: a resume from it then loses no record
                save_checkpoint(
                    checkpoint,
                    Checkpoint(model.state_dict(), optimizer.state_dict(), scheduler.state_dict(), history),
                )
            bar.set_postfix(loss=f"{history.train_loss[-1]:.3g}", test_acc=f"{history.test_acc[-1]:.3f}")
    return history


@dataclass
class Checkpoint:
    """Everything needed to continue training after an epoch."""

    model: dict
    optimizer: dict
    scheduler: dict
    history: History


def _commit_records(session: object) -> None:
    """Commit the session's buffered records (a recorder failure stops recording, never training)."""
    flush = getattr(session, "flush", None)
    if flush is not None:
        flush()


def save_checkpoint(path: str | os.PathLike, checkpoint: Checkpoint) -> None:
    """Write ``checkpoint`` atomically (a temporary file, then ``os.replace``)."""
    tmp = f"{os.fspath(path)}.tmp"
    torch.save(
        {
            "model": checkpoint.model,
            "optimizer": checkpoint.optimizer,
            "scheduler": checkpoint.scheduler,
            "history": asdict(checkpoint.history),
        },
        tmp,
    )
    os.replace(tmp, path)


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    return Checkpoint(state["model"], state["optimizer"], state["scheduler"], History(**state["history"]))
