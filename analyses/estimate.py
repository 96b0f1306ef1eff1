"""What a set of runs costs before it runs: optimizer steps × measured seconds per step.

Steps of a training run = epochs × ⌈n / batch⌉, with ``n`` the training images it uses: ``n_train`` of its
parameters (a subset), else the size of the dataset read from the data folders (``--data-dir``, the files' real
count), else the dataset's nominal size (:data:`NOMINAL`, marked ``nominal``); ``n_val`` images held out for
validation are subtracted; ``total_epochs`` (skip* runs train twice) wins over ``epochs``.

A run that will not train is no work (:meth:`Estimator.not_run` says why): one whose data is refused or cannot
be read here, and one marked ``optional_data`` whose data is absent (it leaves a not-run marker,
:mod:`analyses.optional_data`). A run that needs data absent here is still estimated at the nominal size: the
plan may be made on a machine other than the ones that run (a cluster's nodes with the data at the same path).

Seconds per step: the run's model (``create_model(params["model"], ...)``) is built with the data's shape and
one SGD step (forward, cross-entropy, backward, update) is timed on random inputs at each batch size of
:data:`TIMED_BATCHES` (the faster of two steps) after a warm-up step; the line ``t(b) = t₀ + b·t₁`` through
them gives the run's batch ``b``. Measured on this machine's CPU with its current torch threads (the analyses
train on the CPU). Probes, evaluation and data loading are not in it, so the estimate is a lower bound of the
training cost. Timings are cached in ``<root>/timings.json`` per machine kind (CPU model, torch threads),
model, input shape and dtype: a second ``--plan`` measures nothing.
Computed results (Monte Carlo, schematics...) have no steps and are listed without an estimate.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import platform
import re
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from analyses.optional_data import unavailable

# images of the training set, input shape, classes (the documents' datasets)
NOMINAL = {
    "mnist": (60000, (1, 28, 28), 10),
    "fashion_mnist": (60000, (1, 28, 28), 10),
    "emnist_letters": (124800, (1, 28, 28), 26),
    "cifar10": (50000, (3, 32, 32), 10),
    "cifar100": (50000, (3, 32, 32), 100),
    "digits": (1437, (1, 8, 8), 10),
}
TIMED_BATCHES = (4, 16)


@dataclass
class Cost:
    """Estimated cost of one run: ``steps`` (None: not a training run) × ``seconds_per_step``."""

    steps: int | None
    seconds_per_step: float | None
    basis: str  # how n was found: "data" (the files), "params" (n_train), "nominal"

    @property
    def seconds(self) -> float | None:
        if self.steps is None or self.seconds_per_step is None:
            return None
        return self.steps * self.seconds_per_step


def device_kind() -> str:
    """This machine's kind of device, as the timings are keyed: CPU model and torch threads."""
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"cpu {name} ({torch.get_num_threads()} threads)"


class Estimator:
    """Estimates runs' costs, caching the data sizes it read and the timings it measured."""

    def __init__(self, root: str | os.PathLike | None, data_dir: str | None = None, measure: bool = True):
        self.cache_path = Path(root) / "timings.json" if root is not None else None
        self.data_dir, self.measure = data_dir, measure
        self.kind = device_kind()
        self.timings: dict[str, list[float]] = {}  # key -> [t₀, t₁] of t(b) = t₀ + b·t₁
        if self.cache_path is not None and self.cache_path.exists():
            self.timings = json.loads(self.cache_path.read_text()).get(self.kind, {})
        self._data: dict[str, tuple[int, tuple[int, ...], int, str]] = {}
        self._unusable: dict[str, tuple[bool, str]] = {}  # dataset -> (absent, why) when it cannot be used here

    def data(self, params: dict) -> tuple[int, tuple[int, ...], int, str]:
        """Training images, input shape (after ``downsample``), classes and how they were found."""
        name = params.get("dataset")
        if name not in self._data:
            from gradlens.data import load_dataset

            try:
                data = load_dataset(name, self.data_dir)
                self._data[name] = (data.n_train, tuple(data.input_shape), data.num_classes, "data")
            except (FileNotFoundError, ValueError) as error:  # absent, refused or unreadable: the nominal size
                n, shape, classes = NOMINAL.get(name, (60000, (1, 28, 28), 10))
                self._data[name] = (n, shape, classes, "nominal")
                self._unusable[name] = (isinstance(error, FileNotFoundError), unavailable(name, error))
        n, shape, classes, basis = self._data[name]
        factor = params.get("downsample") or 1
        if len(shape) == 3 and factor > 1:
            shape = (shape[0], shape[1] // factor, shape[2] // factor)
        return n, shape, classes, basis

    def not_run(self, params: dict) -> str | None:
        """Why the run will not train here, or None: its data is refused or unreadable, or absent for a run
        marked ``optional_data``. (Absent data that a run requires is estimated at the nominal size.)"""
        if params.get("dataset") in (None, "brackets") or not params.get("batch_size"):
            return None
        self.data(params)
        absent, why = self._unusable.get(params["dataset"], (False, ""))
        if not why or (absent and not params.get("optional_data")):
            return None
        return why

    def steps(self, params: dict) -> tuple[int | None, str]:
        """Optimizer steps of the run and how ``n`` was found; None for a run that does not train."""
        epochs = params.get("total_epochs") or params.get("epochs")
        batch = params.get("batch_size")
        if not epochs or not batch or "dataset" not in params:
            return None, "-"
        if params["dataset"] == "brackets":
            n, basis = params["n_train"], "params"
        else:
            n, _, _, basis = self.data(params)
            if params.get("n_train"):
                n, basis = min(n, params["n_train"]), "params"
        n -= params.get("n_val") or 0
        return epochs * math.ceil(max(n, 1) / batch), basis

    def cost(self, params: dict) -> Cost:
        steps, basis = self.steps(params)
        if steps is None:
            return Cost(None, None, basis)
        return Cost(steps, self.seconds_per_step(params), basis)

    def seconds_per_step(self, params: dict) -> float | None:
        """Measured (or cached) seconds of one SGD step of the run's model at its batch size."""
        model_name, batch = params.get("model"), params["batch_size"]
        if not model_name:
            return None
        if params.get("dataset") == "brackets":
            shape, classes = (params["seq_len"],), 2
        else:
            _, shape, classes, _ = self.data(params)
        dtype = params.get("dtype", "float32")
        key = f"{model_name}|{'x'.join(map(str, shape))}|{dtype}"
        if key not in self.timings:
            if not self.measure:
                return None
            try:
                self.timings[key] = _time_model(model_name, params, shape, classes, dtype)
            except Exception:  # noqa: BLE001 - a model the generic builder cannot make: no estimate
                return None
            self.save()  # each measurement kept at once: an interrupted first plan loses none
        fixed, per_sample = self.timings[key]
        return max(fixed + per_sample * batch, per_sample * batch, 0.0)

    def save(self) -> None:
        """Write the timings measured so far into the cache file."""
        if self.cache_path is None or not self.timings:
            return
        self.cache_path.parent.mkdir(parents=True, exist_ok=True)
        cache = json.loads(self.cache_path.read_text()) if self.cache_path.exists() else {}
        cache[self.kind] = self.timings
        self.cache_path.write_text(json.dumps(cache, indent=1, sort_keys=True))


# keywords a model builder may take, from the run's parameters or the data
OPTIONAL = ("width", "growth", "init", "sc_weight", "sc_rears", "sc_gap", "seq_len", "d_model", "heads", "d_ff")


def _time_model(name: str, params: dict, shape: tuple[int, ...], classes: int, dtype: str) -> list[float]:
    """``[t₀, t₁]``: seconds of one SGD step of the model at batch ``b`` ≈ ``t₀ + b·t₁``."""
    from gradlens.models.registry import families

    family = next(f for f in families() if f.match(name) is not None)
    accepted = inspect.signature(family.builder).parameters
    offered = {
        "in_channels": shape[0], "image_size": shape[-1], "input_shape": shape, "num_classes": classes,
        "vocab_size": 2, **{k: params[k] for k in OPTIONAL if params.get(k) is not None},
    }
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values()):
        kwargs = dict(offered)  # a builder passing **kw on: drop each keyword it turns out not to take
    else:
        kwargs = {k: v for k, v in offered.items() if k in accepted}
    torch_dtype = torch.float64 if dtype == "float64" else torch.float32
    generator = torch.Generator().manual_seed(0)
    with torch.random.fork_rng(devices=[]):  # building the model must not move the caller's global RNG
        for _ in range(len(offered) + 1):
            try:
                model = family.builder(**family.match(name), **kwargs).to(torch_dtype)
                break
            except TypeError as error:
                unexpected = re.search(r"unexpected keyword argument '(\w+)'", str(error))
                if unexpected is None or unexpected.group(1) not in kwargs:
                    raise
                del kwargs[unexpected.group(1)]
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def step(batch: int) -> float:
        if params.get("dataset") == "brackets":
            x = torch.randint(0, 2, (batch, *shape), generator=generator)
        else:
            x = torch.rand((batch, *shape), generator=generator, dtype=torch_dtype)
        y = torch.randint(0, classes, (batch,), generator=generator)
        start = time.perf_counter()
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        return time.perf_counter() - start

    step(TIMED_BATCHES[0])  # warm-up
    (b0, b1), (s0, s1) = TIMED_BATCHES, (min(step(b), step(b)) for b in TIMED_BATCHES)  # min: less noise
    per_sample = max((s1 - s0) / (b1 - b0), 0.0)  # noise can make the larger batch look faster: no slope then
    return [s0 - per_sample * b0, per_sample]  # t(b) >= t(b0) for every b >= b0


def format_seconds(seconds: float | None) -> str:
    """``"3.2 s"``, ``"4.5 min"``, ``"2.1 h"``, ``"3.4 d"``; ``"-"`` for None."""
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.1f} s"
