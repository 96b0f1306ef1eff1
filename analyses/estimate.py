"""What a set of runs costs before it runs: optimizer steps × measured seconds per step.

Steps of a training run = epochs × ⌈n / batch⌉, with ``n`` the training images it uses: ``n_train`` of its
parameters (a subset), else the size of the dataset read from the data folders (``--data-dir``, the files' real
count), else the dataset's nominal size (:data:`NOMINAL`, marked ``nominal``); ``n_val`` images held out for
validation are subtracted; ``total_epochs`` (skip* runs train twice) wins over ``epochs``.

A run that will not train is no work (:meth:`Estimator.not_run` says why): one whose data is refused or cannot
be read here, and one marked ``optional_data`` whose data is absent (it leaves a not-run marker,
:mod:`analyses.optional_data`). A run that needs data absent here is still estimated at the nominal size: the
plan may be made on a machine other than the ones that run (a cluster's nodes with the data at the same path).

Seconds per step, per device kind:

- **CPU, measured**: the run's model (``create_model(params["model"], ...)``) is built with the data's shape and
  SGD steps (forward, cross-entropy, backward, update) on random inputs at the run's own batch size are timed
  after two warm-up steps; the estimate is the least of 3 to 20 of them (as many as fit in half a second), each
  step's time being the smaller of its wall and CPU time (:func:`_time_model` says why: both only ever add to
  the idle machine's time, so the least is the best estimate, even on a busy machine). Timed with the torch
  threads each run will have (``threads``: a worker of ``--jobs N`` gets ``cpu_count // N``), on this
  machine's CPU, and with several also at one thread, the smaller kept (threads that wait for each other on a
  busy machine spin, which inflates both clocks). (An earlier estimate timed one step at batches 4 and 16 and
  extrapolated the line through them to the run's batch: for small nets the two times differ by little more
  than their noise, which the slope multiplies by the batch; it gave van_thin_fashion's 60 quick runs 3.2 h
  instead of the 13 min they took.)
- **CUDA, measured** when this machine has a GPU: the same, on it, by the wall clock, waiting for the GPU.
- **CUDA, modelled** otherwise (an estimate until measured, and labelled so): ``t(b) = n·τ + F(b)/R`` with ``n``
  the kernels of one step (the aten operations that are not views, counted on the CPU in one SGD step with
  ``foreach`` updates, as CUDA runs them), τ = :data:`GPU_SECONDS_PER_KERNEL` (eager PyTorch's host cost of
  one kernel: dispatch and launch, 5–20 µs), ``F(b)`` the step's forward and backward FLOPs
  (``torch.utils.flop_counter``, linear in ``b``) and R = :data:`GPU_FLOPS` (a quarter of an H100's 67 TFLOP/s
  float32 peak, for small non-tensor-core convolutions and matmuls). The documents' nets at the quick and medium
  sizes are bound by ``n·τ``: a GPU helps their steps little, the paper sizes (CIFAR, batch 128) much more.

Each run also evaluates its test images every epoch (:meth:`Estimator.evaluation`: forwards at a third of a step
per sample) and reads its data once (the CPU time ``load_dataset`` took here). Probes are not counted (their cost
is a few per cent of a step at the analyses' schedules; a run that updates extra parameters after each step, as
the VAN nets do, costs more), so the estimates are lower bounds of the runs' cost. Timings are cached in
``<root>/timings.json`` per device kind (CPU model and torch threads, or GPU name), model, input shape, dtype and
batch, the kernel and FLOP counts under ``"counts"``: a second ``--plan`` measures nothing.
Computed results (Monte Carlo, schematics...) have no steps and are listed without an estimate.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from analyses.optional_data import unavailable
from gradlens.train import cpu_model

# images of the training set, input shape, classes (the documents' datasets)
NOMINAL = {
    "mnist": (60000, (1, 28, 28), 10),
    "fashion_mnist": (60000, (1, 28, 28), 10),
    "emnist_letters": (124800, (1, 28, 28), 26),
    "cifar10": (50000, (3, 32, 32), 10),
    "cifar100": (50000, (3, 32, 32), 100),
    "digits": (1437, (1, 8, 8), 10),
}
WARM_STEPS = 2
NOMINAL_TEST = {"mnist": 10000, "fashion_mnist": 10000, "emnist_letters": 20800, "cifar10": 10000,
                "cifar100": 10000, "digits": 360}
TIMED_STEPS = 3  # at least this many timed steps per model and batch ...
MAX_TIMED_STEPS = 20  # ... and more while less than TIMING_SECONDS have gone by, up to this many
TIMING_SECONDS = 0.5
COUNTED_BATCH = 16  # the batch at which the CUDA model's kernels and FLOPs per sample are counted
GPU_SECONDS_PER_KERNEL = 10e-6
"""τ of the modelled CUDA step: eager PyTorch's host cost per kernel (dispatch and launch), a stated assumption."""
GPU_FLOPS = 15e12
"""R of the modelled CUDA step: float32 FLOP/s reached by the documents' small layers (a quarter of an H100's
67 TFLOP/s non-tensor-core peak), a stated assumption."""
MODELLED = (f"modelled: kernels × {GPU_SECONDS_PER_KERNEL * 1e6:g} µs + FLOPs / {GPU_FLOPS / 1e12:g} TFLOP/s, "
            "not measured")


@dataclass
class Cost:
    """Estimated cost of one run: ``steps`` (None: not a training run) × seconds per step on the CPU
    (``seconds_per_step``) and on a CUDA GPU (``cuda_seconds_per_step``, measured or modelled), each step
    counted ``1 + evaluation`` times (the evaluation's forwards, a share of the steps), plus ``load_seconds``
    (reading the run's data, which every run does once: measured here when the data was read)."""

    steps: int | None
    seconds_per_step: float | None
    basis: str  # how n was found: "data" (the files), "params" (n_train), "nominal"
    cuda_seconds_per_step: float | None = None
    evaluation: float = 0.0
    load_seconds: float = 0.0

    @property
    def seconds(self) -> float | None:
        if self.steps is None or self.seconds_per_step is None:
            return None
        return self.steps * self.seconds_per_step * (1 + self.evaluation) + self.load_seconds

    @property
    def cuda_seconds(self) -> float | None:
        if self.steps is None or self.cuda_seconds_per_step is None:
            return None
        return self.steps * self.cuda_seconds_per_step * (1 + self.evaluation) + self.load_seconds


def device_kind(threads: int | None = None) -> str:
    """The kind of this machine's CPU, as the timings are keyed: its model and ``threads`` torch threads (default:
    this process's)."""
    return f"cpu {cpu_model()} ({threads or torch.get_num_threads()} threads)"


def cuda_kind() -> str | None:
    """``"cuda <GPU name>"`` of this machine's current GPU, None without one."""
    if not torch.cuda.is_available():
        return None
    return f"cuda {torch.cuda.get_device_name(torch.cuda.current_device())}"


@contextmanager
def torch_threads(threads: int | None):
    """Torch's intra-op threads set to ``threads`` (None: unchanged) inside the block."""
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class Estimator:
    """Estimates runs' costs on the CPU and on CUDA, caching the data sizes it read and the timings and counts
    it measured.

    Args:
        root: folder of the timing cache ``timings.json`` (None: no cache).
        data_dir: the data folders (image counts and shapes).
        measure: time and count models not in the cache (False: those get no estimate).
        threads: torch threads of each run (the CPU is timed with them); default this process's.
    """

    def __init__(self, root: str | os.PathLike | None, data_dir: str | None = None, measure: bool = True,
                 threads: int | None = None):
        self.cache_path = Path(root) / "timings.json" if root is not None else None
        self.data_dir, self.measure, self.threads = data_dir, measure, threads
        self.kind = device_kind(threads)
        self.cuda_kind = cuda_kind()
        cached = self.cache_path is not None and self.cache_path.exists()
        cache = json.loads(self.cache_path.read_text()) if cached else {}
        # "<model>|<shape>|<dtype>|b<batch>" -> seconds per step (keys of another form, from older trees, unused)
        self.timings: dict[str, float] = cache.get(self.kind, {})
        self.cuda_timings: dict[str, float] = cache.get(self.cuda_kind, {}) if self.cuda_kind else {}
        self.counts: dict[str, list[float]] = cache.get("counts", {})  # key -> [kernels, FLOPs per sample]
        self._data: dict[str, tuple[int, tuple[int, ...], int, str]] = {}
        self._unusable: dict[str, tuple[bool, str]] = {}  # dataset -> (absent, why) when it cannot be used here
        self._test: dict[str, int] = {}  # dataset -> test images
        self._load_seconds: dict[str, float] = {}  # dataset -> CPU seconds load_dataset took here

    def data(self, params: dict) -> tuple[int, tuple[int, ...], int, str]:
        """Training images, input shape (after ``downsample``), classes and how they were found."""
        name = params.get("dataset")
        if name not in self._data:
            from gradlens.data import load_dataset

            start = time.process_time()
            try:
                data = load_dataset(name, self.data_dir)
                self._data[name] = (data.n_train, tuple(data.input_shape), data.num_classes, "data")
                self._test[name] = data.n_test
                self._load_seconds[name] = time.process_time() - start
            except (FileNotFoundError, ValueError) as error:  # absent, refused or unreadable: the nominal size
                n, shape, classes = NOMINAL.get(name, (60000, (1, 28, 28), 10))
                self._data[name] = (n, shape, classes, "nominal")
                self._test[name] = NOMINAL_TEST.get(name, n // 6)
                self._unusable[name] = (isinstance(error, FileNotFoundError), unavailable(name, error))
        n, shape, classes, basis = self._data[name]
        factor = params.get("downsample") or 1
        if len(shape) == 3 and factor > 1:
            shape = (shape[0], shape[1] // factor, shape[2] // factor)
        return n, shape, classes, basis

    def evaluation(self, params: dict, steps: int) -> float:
        """The evaluation's forwards as a share of the run's steps: every epoch evaluates the test images
        (``n_test``, else the dataset's test set), a forward costing about a third of a training step per
        sample (a forward, then a backward of about twice its work):
        epochs × n_test / (3 × steps × batch)."""
        if params.get("dataset") in (None, "brackets"):
            return 0.0
        self.data(params)
        tested = params.get("n_test") or self._test.get(params["dataset"], 0)
        epochs = params.get("total_epochs") or params.get("epochs")
        return epochs * tested / (3 * steps * params["batch_size"])

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
        return Cost(steps, self.seconds_per_step(params), basis, self.cuda_seconds_per_step(params),
                    self.evaluation(params, steps), self._load_seconds.get(params["dataset"], 0.0))

    @property
    def cuda_basis(self) -> str:
        """How the CUDA estimates are made: ``measured on <GPU>`` or the stated model (:data:`MODELLED`)."""
        return f"measured on {self.cuda_kind[5:]}" if self.cuda_kind else MODELLED

    def _model_key(self, params: dict) -> tuple[str, tuple[int, ...], int, str] | None:
        """(cache key, input shape, classes, dtype) of the run's model; None for a run without one."""
        model_name = params.get("model")
        if not model_name:
            return None
        if params.get("dataset") == "brackets":
            shape, classes = (params["seq_len"],), 2
        else:
            _, shape, classes, _ = self.data(params)
        dtype = params.get("dtype", "float32")
        return f"{model_name}|{'x'.join(map(str, shape))}|{dtype}", shape, classes, dtype

    def _measured(self, table: dict, params: dict, measure, batched: bool = False):
        """``table[key]`` of the run's model (with ``batched``, at the run's batch size: the key ends in
        ``|b<batch>``), measured by ``measure(name, params, shape, classes, dtype[, batch])`` when missing (and
        kept in the cache at once: an interrupted first plan loses none)."""
        found = self._model_key(params)
        if found is None:
            return None
        key, shape, classes, dtype = found
        arguments: tuple = (params["model"], params, shape, classes, dtype)
        if batched:
            key += f"|b{params['batch_size']}"
            arguments += (params["batch_size"],)
        if key not in table:
            if not self.measure:
                return None
            try:
                table[key] = measure(*arguments)
            except Exception:  # noqa: BLE001 - a model the generic builder cannot make: no estimate
                return None
            self.save()
        return table[key]

    def seconds_per_step(self, params: dict) -> float | None:
        """Measured (or cached) seconds of one SGD step of the run's model at its batch size, on this CPU
        (:func:`_time_model`)."""
        with torch_threads(self.threads):
            return self._measured(self.timings, params, _time_model, batched=True)

    def cuda_seconds_per_step(self, params: dict) -> float | None:
        """Seconds of one SGD step on a CUDA GPU: measured on this machine's GPU, else modelled (:data:`MODELLED`)."""
        if self.cuda_kind:
            return self._measured(self.cuda_timings, params, _time_model_cuda, batched=True)
        counts = self._measured(self.counts, params, _count_model)
        if counts is None:
            return None
        kernels, flops_per_sample = counts
        return kernels * GPU_SECONDS_PER_KERNEL + params["batch_size"] * flops_per_sample / GPU_FLOPS

    def save(self) -> None:
        """Write the timings and counts measured so far into the cache file."""
        if self.cache_path is None or not (self.timings or self.cuda_timings or self.counts):
            return
        self.cache_path.parent.mkdir(parents=True, exist_ok=True)
        cache = json.loads(self.cache_path.read_text()) if self.cache_path.exists() else {}
        for kind, table in ((self.kind, self.timings), (self.cuda_kind, self.cuda_timings), ("counts", self.counts)):
            if kind and table:
                cache[kind] = table
        self.cache_path.write_text(json.dumps(cache, indent=1, sort_keys=True))


# keywords a model builder may take, from the run's parameters or the data
OPTIONAL = ("width", "growth", "init", "sc_weight", "sc_rears", "sc_gap", "seq_len", "d_model", "heads", "d_ff")


def _build(name: str, params: dict, shape: tuple[int, ...], classes: int, dtype: str) -> torch.nn.Module:
    """The run's model, built from its name with the keywords its builder takes (the global RNG untouched)."""
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
    with torch.random.fork_rng(devices=[]):  # building the model must not move the caller's global RNG
        for _ in range(len(offered) + 1):
            try:
                return family.builder(**family.match(name), **kwargs).to(torch_dtype)
            except TypeError as error:
                unexpected = re.search(r"unexpected keyword argument '(\w+)'", str(error))
                if unexpected is None or unexpected.group(1) not in kwargs:
                    raise
                del kwargs[unexpected.group(1)]
    raise TypeError(f"cannot build {name} from {sorted(offered)}")


def _batch(params: dict, shape: tuple[int, ...], classes: int, dtype: str, batch: int, generator, device):
    """Random inputs and labels of one batch (brackets: token ids), on ``device``."""
    if params.get("dataset") == "brackets":
        x = torch.randint(0, 2, (batch, *shape), generator=generator)
    else:
        torch_dtype = torch.float64 if dtype == "float64" else torch.float32
        x = torch.rand((batch, *shape), generator=generator, dtype=torch_dtype)
    y = torch.randint(0, classes, (batch,), generator=generator)
    return x.to(device), y.to(device)


def _time_model(name: str, params: dict, shape: tuple[int, ...], classes: int, dtype: str, batch: int,
                device: str = "cpu") -> float:
    """Seconds of one SGD step of the model at the run's own ``batch`` on ``device`` (:func:`_least_step`); on the
    CPU with several torch threads, the smaller of that and the same at one thread.

    Why both on the CPU: each step's time is the smaller of its wall and CPU time. The wall clock also counts the
    waits for a core on a busy machine, CPU time does not; with one thread CPU time is at most the wall time, and
    with several it counts every thread's work, so it exceeds the wall time of a step on an idle machine and
    never falls below it. On a busy machine, though, threads that wait for each other spin (OpenMP), and both
    clocks of a several-thread step grow with the load; the one-thread CPU time does not, and a step at more
    threads is not slower than at one (torch splits only ops large enough to gain). So the least of these is the
    idle machine's step, up to the gain of the extra threads, whatever the load. On a GPU: the wall clock alone,
    the device waited for.
    """
    model = _build(name, params, shape, classes, dtype).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    x, y = _batch(params, shape, classes, dtype, batch, torch.Generator().manual_seed(0), device)
    cuda = torch.device(device).type == "cuda"
    wait = torch.cuda.synchronize if cuda else (lambda: None)

    def step() -> float:
        wait()
        wall, cpu = time.perf_counter(), time.process_time()
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        wait()
        wall = time.perf_counter() - wall
        return wall if cuda else min(wall, time.process_time() - cpu)

    seconds = _least_step(step)
    if not cuda and torch.get_num_threads() > 1:
        with torch_threads(1):
            seconds = min(seconds, _least_step(step))
    return seconds


def _least_step(step) -> float:
    """The least of :data:`TIMED_STEPS` to :data:`MAX_TIMED_STEPS` results of ``step()`` (more while less than
    :data:`TIMING_SECONDS` have gone by) after :data:`WARM_STEPS` untimed calls (allocations, momentum buffers,
    lazy initialisation): noise only ever adds time, so the least is the closest to the step's own."""
    for _ in range(WARM_STEPS):
        step()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < TIMED_STEPS or (len(times) < MAX_TIMED_STEPS and time.perf_counter() - start < TIMING_SECONDS):
        times.append(step())
    return min(times)


def _time_model_cuda(name: str, params: dict, shape: tuple[int, ...], classes: int, dtype: str, batch: int) -> float:
    """:func:`_time_model` on this machine's current GPU."""
    return _time_model(name, params, shape, classes, dtype, batch, device="cuda")


def _count_model(name: str, params: dict, shape: tuple[int, ...], classes: int, dtype: str) -> list[float]:
    """``[n, F₁]``: kernels of one SGD step (aten operations other than views, ``foreach`` update as on CUDA) and
    its forward + backward FLOPs per sample, counted on the CPU at batch :data:`COUNTED_BATCH`."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import FlopCounterMode

    class Kernels(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.count = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if not func.is_view and func not in (torch.ops.aten.detach.default, torch.ops.aten.empty.memory_format):
                self.count += 1
            return func(*args, **(kwargs or {}))

    model = _build(name, params, shape, classes, dtype)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, foreach=True)
    batch = COUNTED_BATCH
    x, y = _batch(params, shape, classes, dtype, batch, torch.Generator().manual_seed(0), "cpu")

    def step() -> None:
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()

    step()  # the first step makes the momentum buffers: count a later one
    with FlopCounterMode(display=False) as flops, Kernels() as kernels:
        step()
    return [kernels.count, flops.get_total_flops() / batch]


def format_seconds(seconds: float | None) -> str:
    """``"3.2 s"``, ``"4.5 min"``, ``"2.1 h"``, ``"3.4 d"``; ``"-"`` for None."""
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.1f} s"
