"""``attach``: a recording session around a model and its optimizer.

The session owns every hook gradlens installs and removes them all on exit:

- one optimizer step pre-hook, where probes fire (gradients are complete, weights not yet updated);
- a one-shot forward-order tracer when the model declares no layers;
- short-lived forward hooks inside ``ProbeContext.capture`` for probes that evaluate a probe batch.

Observation does not perturb training: probes read gradients without modifying them, probe-batch
evaluations run with buffers (BN running statistics) restored afterwards and the global RNG state forked,
and derivatives are taken with ``torch.autograd.grad`` so nothing accumulates into ``.grad``.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from gradlens.layers import ForwardOrderTracer, LayerInfo, resolve_layers
from gradlens.probes.base import GRADS, PROBE_BATCH, Probe, Schedule, as_schedule
from gradlens.recorder import Recorder
from gradlens.spec import LayerSpec, ModelSpec

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class Captured:
    """What one ``ProbeContext.capture`` forward saw.

    Attributes:
        output: the model output for the probe batch.
        inputs: module name -> the first positional input of that module.
        outputs: module name -> the output of that module.
    """

    output: torch.Tensor
    inputs: dict[str, torch.Tensor] = field(default_factory=dict)
    outputs: dict[str, torch.Tensor] = field(default_factory=dict)


class ProbeContext:
    """Everything a probe may read when it fires.

    Attributes:
        model: the observed model.
        spec: the resolved ModelSpec (declared by the model, given by the user, or discovered).
        layers: resolved weight layers in forward order.
        probe_batch: the fixed ``(x, y)``, moved to the model's current device and (floating) dtype, or None.
        loss_fn: ``loss_fn(output, y) -> scalar``.
        step: the 0-based index of the optimizer step about to be taken.
    """

    def __init__(
        self,
        model: nn.Module,
        spec: ModelSpec,
        layers: list[LayerInfo],
        probe_batch: tuple[torch.Tensor, torch.Tensor] | None,
        loss_fn: LossFn,
    ) -> None:
        self.model = model
        self.spec = spec
        self.layers = layers
        self._probe_batch = probe_batch
        self.loss_fn = loss_fn
        self.step = 0
        self._modules = dict(model.named_modules())

    @property
    def probe_batch(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        # Placed when read: the trainer may convert the model (float64, a device) after attach.
        if self._probe_batch is None:
            return None
        x, y = self._probe_batch
        reference = next(self.model.parameters())
        if x.is_floating_point() and (x.dtype, x.device) != (reference.dtype, reference.device):
            x = x.to(device=reference.device, dtype=reference.dtype)
            self._probe_batch = (x, y.to(reference.device))
        return self._probe_batch

    def module(self, name: str) -> nn.Module:
        """The module called ``name``; a clear error when there is none."""
        try:
            return self._modules[name]
        except KeyError:
            raise KeyError(
                f"module {name!r} does not exist in {type(self.model).__name__}; "
                f"see model.named_modules() for valid names"
            ) from None

    @contextlib.contextmanager
    def isolated(self, eval_mode: bool = False) -> Iterator[None]:
        """Run probe computations without side effects on training.

        Restores every buffer (BN running statistics, ``num_batches_tracked``) and the global CPU/CUDA RNG
        state afterwards. With ``eval_mode`` the model is put in eval mode (BN uses running statistics, so
        each sample is processed independently) and its previous train/eval flags are restored.
        """
        saved = {name: buf.detach().clone() for name, buf in self.model.named_buffers()}
        modes = {name: m.training for name, m in self.model.named_modules()}
        devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
        try:
            with torch.random.fork_rng(devices=devices):
                if eval_mode:
                    self.model.eval()
                yield
        finally:
            # Through .data: the restore must not bump the buffers' autograd version counters, or a graph
            # built inside (BN in eval mode saves running statistics for backward) could not be differentiated.
            for name, buf in self.model.named_buffers():
                buf.data.copy_(saved[name])
            for name, module in self.model.named_modules():
                module.training = modes[name]

    def capture(
        self,
        x: torch.Tensor,
        *,
        inputs: Iterable[str] = (),
        outputs: Iterable[str] = (),
        grad: bool = False,
        eval_mode: bool = False,
    ) -> Captured:
        """Run ``model(x)`` once and capture module inputs/outputs, side-effect free.

        Hooks are installed for the union of requested modules (duplicates merged) and removed before
        returning. With ``grad=True`` the captured tensors stay in the autograd graph, ready for
        ``torch.autograd.grad``; parameters' ``.grad`` are never touched by that route.
        """
        captured = Captured(output=torch.empty(0))
        handles = []

        def keep_input(name: str):
            def hook(module: nn.Module, args: tuple) -> None:
                captured.inputs.setdefault(name, args[0])

            return hook

        def keep_output(name: str):
            def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
                captured.outputs.setdefault(name, output)

            return hook

        try:
            for name in dict.fromkeys(inputs):
                handles.append(self.module(name).register_forward_pre_hook(keep_input(name)))
            for name in dict.fromkeys(outputs):
                handles.append(self.module(name).register_forward_hook(keep_output(name)))
            with self.isolated(eval_mode=eval_mode), torch.set_grad_enabled(grad):
                captured.output = self.model(x)
        finally:
            for handle in handles:
                handle.remove()
        return captured


class Session:
    """A recording session; create it with :func:`attach`.

    Probes fire inside ``optimizer.step()`` (a step pre-hook), so a training loop needs no extra calls
    except optional :meth:`log` for scalars. Use as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        path: str | os.PathLike,
        probes: Sequence[Probe],
        every: int | Iterable[int] | Schedule,
        probe_batch: tuple[torch.Tensor, torch.Tensor] | None,
        loss_fn: LossFn | None,
        spec: ModelSpec | None,
        layers: Sequence[str] | None,
        meta: Mapping[str, object] | None,
        overwrite: bool,
        resume_step: int | None,
        flush_every: int,
        flush_seconds: float,
    ) -> None:
        self.model = model
        self.optimizer = optimizer
        self.path = os.fspath(path)
        self.probes = list(probes)
        names = [p.name for p in self.probes]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(
                f"probe names must be unique, {duplicated} appear twice; give one a name= of its own"
            )
        default = as_schedule(every)
        self.schedules = {p.name: p.schedule or default for p in self.probes}
        self.step = 0 if resume_step is None else int(resume_step) + 1
        self._closed = False
        self._handles: list = []
        self._tracer: ForwardOrderTracer | None = None
        self._ctx: ProbeContext | None = None
        self._loss_fn = loss_fn or nn.functional.cross_entropy
        self._probe_batch = probe_batch
        needs_batch = [p.name for p in self.probes if PROBE_BATCH in p.needs]
        if needs_batch and self._probe_batch is None:
            raise ValueError(f"probes {needs_batch} need a probe batch; pass attach(..., probe_batch=(x, y))")

        self._spec = self._declared_spec(spec, layers)
        if self._spec is None:
            self._tracer = ForwardOrderTracer(model)
        else:
            self._spec.validate(model)

        mode = "resume" if resume_step is not None else ("overwrite" if overwrite else "new")
        self.recorder = Recorder(
            path,
            meta=self._meta(meta),
            mode=mode,
            resume_step=resume_step,
            flush_every=flush_every,
            flush_seconds=flush_seconds,
        )
        self._handles.append(optimizer.register_step_pre_hook(self._on_step))

    def _declared_spec(self, spec: ModelSpec | None, layers: Sequence[str] | None) -> ModelSpec | None:
        if spec is not None and layers is not None:
            raise ValueError("pass either spec= or layers=, not both")
        if layers is not None:
            return ModelSpec(layers=tuple(LayerSpec(name) for name in layers))
        if spec is not None:
            return spec
        declared = getattr(self.model, "gradlens_spec", None)
        return declared() if callable(declared) else None

    def _meta(self, meta: Mapping[str, object] | None) -> dict:
        return {
            "config": dict(meta or {}),
            "model": {
                "class": type(self.model).__name__,
                "parameters": sum(p.numel() for p in self.model.parameters()),
                "dtype": str(next(self.model.parameters()).dtype).replace("torch.", ""),
            },
            "optimizer": {
                "class": type(self.optimizer).__name__,
                "defaults": _jsonable(self.optimizer.defaults),
            },
            "probes": [
                {"name": p.name, "class": type(p).__name__, "schedule": self.schedules[p.name].description}
                for p in self.probes
            ],
            "probe_batch_size": None if self._probe_batch is None else int(self._probe_batch[0].shape[0]),
        }

    @property
    def context(self) -> ProbeContext:
        """The probe context; resolved at the first optimizer step (or at attach when layers are declared)."""
        if self._ctx is None:
            self._start()
        return self._ctx

    def _start(self) -> None:
        if self._spec is None:
            if self._tracer is None or not self._tracer.done:
                raise RuntimeError(
                    "gradlens discovers layers on the first forward pass, but optimizer.step() came before "
                    "any forward; run the model first or pass attach(..., layers=[...])"
                )
            self._spec = self._tracer.spec()
            self._tracer = None
        layers = resolve_layers(self.model, self._spec)
        self._ctx = ProbeContext(self.model, self._spec, layers, self._probe_batch, self._loss_fn)
        self.recorder.start(
            [info.row() for info in layers], {p.name: p.quantities(self._ctx) for p in self.probes}
        )

    def _on_step(self, optimizer: torch.optim.Optimizer, args: tuple, kwargs: dict) -> None:
        ctx = self.context
        ctx.step = self.step
        for probe in self.probes:
            if self.schedules[probe.name](self.step):
                # Gradient-only probes need no graph; probe-batch probes choose via ctx.capture(grad=...).
                reads_grads_only = probe.needs <= {GRADS}
                with torch.no_grad() if reads_grads_only else contextlib.nullcontext():
                    values = probe.compute(ctx)
                self.recorder.record(probe.name, self.step, values)
        self.step += 1

    def log(self, step: int | None = None, **scalars: float) -> None:
        """Record scalars (loss, accuracy, lr, ...).

        They are stored at ``step`` when given, else at the index of the most recent optimizer step (the step
        whose gradients the probes saw), or 0 before the first step.
        """
        at = max(self.step - 1, 0) if step is None else int(step)
        self.recorder.log_scalars(at, **{k: float(v) for k, v in scalars.items()})

    def close(self, status: str = "finished") -> None:
        """Remove every hook, flush and close the file. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        if self._tracer is not None:
            self._tracer.remove()
            self._tracer = None
        self.recorder.close(status=status)

    def __enter__(self) -> Session:
        return self

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: object) -> None:
        self.close(status="finished" if exc_type is None else "failed")


def _jsonable(values: Mapping[str, object]) -> dict:
    out = {}
    for key, value in values.items():
        try:
            json.dumps(value)
            out[key] = value
        except TypeError:
            out[key] = repr(value)
    return out


def attach(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    path: str | os.PathLike,
    probes: Sequence[Probe] = (),
    every: int | Iterable[int] | Schedule = 1,
    probe_batch: tuple[torch.Tensor, torch.Tensor] | None = None,
    loss_fn: LossFn | None = None,
    *,
    spec: ModelSpec | None = None,
    layers: Sequence[str] | None = None,
    meta: Mapping[str, object] | None = None,
    overwrite: bool = False,
    resume_step: int | None = None,
    flush_every: int = 64,
    flush_seconds: float = 5.0,
) -> Session:
    """Attach probes to a training run and record them into the HDF5 file at ``path``.

    Args:
        model: the network being trained.
        optimizer: its optimizer; probes fire at each ``optimizer.step()``.
        path: the HDF5 file to write. An existing file is refused unless ``overwrite`` or ``resume_step``.
        probes: probe instances, e.g. ``[GradStats()]``.
        every: default schedule for probes created without one (an int N = every N steps, a list of steps,
            or a :class:`~gradlens.probes.base.Schedule`).
        probe_batch: a fixed ``(x, y)`` batch for probes that evaluate the model (cushions, σ, ...).
        loss_fn: ``loss_fn(output, y)``; cross-entropy by default.
        spec: what to measure; by default ``model.gradlens_spec()`` when the model defines it, else layers
            are discovered in forward order on the first forward pass.
        layers: an explicit list of layer module names (instead of ``spec``).
        meta: run configuration stored in the file (JSON-serialisable).
        overwrite: replace an existing file at ``path``.
        resume_step: continue an existing run after this step; records after it are dropped.
        flush_every: flush after this many buffered records.
        flush_seconds: flush when this many seconds passed since the last flush.

    Returns:
        A :class:`Session`; use it as a context manager.
    """
    return Session(
        model,
        optimizer,
        path,
        probes,
        every,
        probe_batch,
        loss_fn,
        spec,
        layers,
        meta,
        overwrite,
        resume_step,
        flush_every,
        flush_seconds,
    )
