"""``attach``: a recording session around a model and its optimizer.

The session owns every hook gradlens installs and removes them all on exit:

- one optimizer step pre-hook, where probes fire (gradients are complete, weights not yet updated); with
  ``optimizer.step(closure)`` it wraps the closure so that probes fire after the closure's first evaluation;
- one optimizer step post-hook, where the step counter advances and update probes (``UpdateRatio``) record;
- one forward pre-hook on the model, which tells :meth:`Session.log` that a forward of the next step began;
- a one-shot forward-order tracer when the model declares no layers;
- short-lived forward hooks inside ``ProbeContext.capture`` for probes that evaluate a probe batch.

Under ``torch.compile`` the session turns on dynamo's hook guards while it is attached (when dynamo is
loaded), so a compiled graph recompiles with gradlens's hooks instead of silently running without them.

Observation does not perturb training: probes read gradients without modifying them, probe-batch
evaluations run with buffers (BN running statistics) restored afterwards and the global RNG state forked,
and derivatives are taken with ``torch.autograd.grad`` so nothing accumulates into ``.grad``.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from gradlens.amp import ScalerWatch
from gradlens.distributed import (
    DEFAULT_TIMEOUT,
    NullRecorder,
    RankFailure,
    Reducer,
    Topology,
    fsdp1_modules,
    sharded_parameters,
    topology,
    unwrap_data_parallel,
)
from gradlens.layers import (
    ForwardOrderTracer,
    LayerInfo,
    ParameterInfo,
    check_names,
    describe_parameters,
    resolve_layers,
)
from gradlens.naming import module_table, uncompiled
from gradlens.probes.base import GRADS, PROBE_BATCH, Probe, Schedule, as_schedule
from gradlens.recorder import Recorder
from gradlens.spec import LayerSpec, ModelSpec

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def eager_call(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``model(x)`` run eagerly: a model compiled in place (``model.compile()``) would run its compiled graph,
    which ignores hooks added after compilation."""
    if getattr(model, "_compiled_call_impl", None) is not None:
        return model._call_impl(x)
    return model(x)


class _HookGuards:
    """While a session is attached, compiled graphs guard on module hooks (``torch.compile`` recompiles when
    gradlens adds or removes its hooks) instead of running whichever hook set was compiled first.

    Only when ``torch._dynamo`` is already imported: before that, nothing is compiled yet, and graphs compiled
    later see gradlens's hooks from the start. The previous setting returns when the last session closes.
    """

    users = 0
    saved: bool | None = None

    @classmethod
    def acquire(cls) -> bool:
        dynamo = sys.modules.get("torch._dynamo")
        if dynamo is None:
            return False
        if cls.users == 0:
            cls.saved = dynamo.config.skip_nnmodule_hook_guards
            dynamo.config.skip_nnmodule_hook_guards = False
        cls.users += 1
        return True

    @classmethod
    def release(cls) -> None:
        cls.users -= 1
        dynamo = sys.modules.get("torch._dynamo")
        if cls.users == 0 and dynamo is not None and cls.saved is not None:
            dynamo.config.skip_nnmodule_hook_guards = cls.saved


class ProbeFailureWarning(RuntimeWarning):
    """A probe raised; the error is recorded in the run's events and training goes on."""


class RecorderFailureWarning(RuntimeWarning):
    """The recorder failed; recording stopped and training goes on."""


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
        model: the observed model (the module inside ``torch.compile`` and DDP/DataParallel wrappers:
            probe-batch evaluations run eagerly, so that their hooks fire, and issue no collective).
        spec: the resolved ModelSpec (declared by the model, given by the user, or discovered).
        layers: resolved weight layers in forward order.
        parameters: every parameter of the model (frozen ones too, ``trainable=False``) with its wrapper-free
            qualified name, in registration order.
        probe_batch: the fixed ``(x, y)``, moved to the model's current device and (floating) dtype, or None.
        loss_fn: ``loss_fn(output, y) -> scalar``.
        step: the 0-based index of the optimizer step about to be taken.
        reducer: under FSDP2 (sharded gradients), the :class:`gradlens.distributed.Reducer` with which gradient
            probes combine per-parameter sums over ranks; None otherwise (gradients are whole on this rank).
    """

    def __init__(
        self,
        model: nn.Module,
        spec: ModelSpec,
        layers: list[LayerInfo],
        probe_batch: tuple[torch.Tensor, torch.Tensor] | None,
        loss_fn: LossFn,
        parameters: list[ParameterInfo] | None = None,
    ) -> None:
        self.model = _unwrapped(model)
        self.spec = spec
        self.layers = layers
        self.parameters = describe_parameters(model) if parameters is None else parameters
        self._probe_batch = probe_batch
        self.loss_fn = loss_fn
        self.step = 0
        self.reducer: Reducer | None = None
        self._modules = module_table(model)

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
        """The module called ``name`` (with or without wrapper prefixes); a clear error when there is none."""
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
                captured.output = eager_call(self.model, x)
        finally:
            for handle in handles:
                handle.remove()
        return captured


class Session:
    """A recording session; create it with :func:`attach`.

    Probes fire inside ``optimizer.step()``, so a training loop needs no extra calls except optional
    :meth:`log` for scalars. Use as a context manager, or call :meth:`close`.

    When probes fire: in the optimizer's step pre-hook (gradients complete, weights not yet updated). For a
    closure optimizer (``optimizer.step(closure)``, e.g. LBFGS) the session wraps the closure and the probes
    fire right after its *first* evaluation in that step: the gradient at the step's starting weights, the one
    the update starts from. LBFGS's further evaluations (inner iterations, line search) are not recorded.

    Failures: a probe that raises is recorded in the file's events (``run.events()``: ``probe_error`` with the
    step and ``"ExcType: message"``), warned once, and switched off after ``MAX_FAILURES`` consecutive failures
    (``probe_disabled``); training and the other probes go on. A recorder that fails (disk full, file removed,
    ...) is warned once and recording stops (the file is marked ``failed`` where it can still be written);
    training goes on. Configuration mistakes are raised by :func:`attach` before any file is touched.

    Several processes (``torch.distributed``; see :mod:`gradlens.distributed`): every rank attaches with the same
    arguments; the writer rank writes the file, the others get a :class:`~gradlens.distributed.NullRecorder`.
    With whole gradients on every rank (DDP) the probes run on the writer only; with sharded gradients (FSDP2)
    they run on every rank and combine their sums through ``ctx.reducer``. A :class:`RankFailure` (a collective
    that failed or timed out) is never taken for a probe failure: it ends the step with that error.

    Mixed precision: with ``scaler=`` a step the GradScaler skips (Inf/NaN gradients) still fires the gradient
    probes (on the unscaled gradients) and records a ``step_skipped`` event; skipped steps are counted by
    ``step`` like any other.

    Attributes:
        step: the 0-based index of the next optimizer step (during ``optimizer.step()``: the step being taken).
        topology: this process's rank, the world size, the backend and the writer rank.
        recording: False once the recorder failed or the session was closed.
    """

    MAX_FAILURES = 3

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
        scaler: object | None = None,
        writer_rank: int = 0,
        collective_timeout: datetime.timedelta | float = DEFAULT_TIMEOUT,
    ) -> None:
        self.model = model
        self.optimizer = optimizer
        self.path = os.fspath(path)
        self.probes = list(probes)
        self.step = 0 if resume_step is None else int(resume_step) + 1
        self.recording = True
        self._closed = False
        self._handles: list = []
        self._tracer: ForwardOrderTracer | None = None
        self._ctx: ProbeContext | None = None
        self._loss_fn = loss_fn or nn.functional.cross_entropy
        self._probe_batch = probe_batch
        self._failures: dict[str, int] = {}  # consecutive failures per probe
        self._warned: set[str] = set()
        self._disabled: set[str] = set()
        self._forward_since_step = False
        self._in_step = False
        self._closure_fired = False
        self._pending_after: list[Probe] = []  # probes measuring the update, prepared in this step
        self._declared: dict[str, dict] = {}  # probe name -> its quantities, for probes the recorder accepted

        # Everything that can be checked is checked before the recorder (and so any file) exists.
        self._check_probes()
        self.topology: Topology = topology(writer_rank)
        self._reducer = self._distributed_checks(collective_timeout)
        # DDP (whole gradients everywhere): probes run on the writer; FSDP2: on every rank, through the reducer
        self._runs_probes = self.topology.is_writer or self._reducer is not None
        self._scaler_watch: ScalerWatch | None = None
        default = as_schedule(every)
        self.schedules = {p.name: p.schedule or default for p in self.probes}
        self._parameters = describe_parameters(model)
        self._spec = self._declared_spec(spec, layers)
        if self._spec is not None:
            check_names(model, self._spec)
            resolve_layers(model, self._spec)  # every declared layer has a .weight
        for probe in self.probes:
            probe.validate(model, self._spec)
        if self._spec is None:
            # strict: an unknown parameter-owning module type is an error only when a probe reads layers
            self._tracer = ForwardOrderTracer(model, strict=any(p.uses_layers for p in self.probes))

        mode = "resume" if resume_step is not None else ("overwrite" if overwrite else "new")
        try:
            if scaler is not None:
                self._scaler_watch = ScalerWatch(scaler, optimizer, self._on_skipped)
            if not self.topology.is_writer:  # the other ranks never create, open or lock the file
                self.recorder = NullRecorder(self.path, self.topology.rank)
            else:
                self.recorder = Recorder(
                    path,
                    meta=self._meta(meta),
                    mode=mode,
                    resume_step=resume_step,
                    flush_every=flush_every,
                    flush_seconds=flush_seconds,
                )
        except BaseException:
            self._remove_hooks()
            raise
        self._hook_guards = _HookGuards.acquire()
        self._handles.append(optimizer.register_step_pre_hook(self._on_step_pre))
        self._handles.append(optimizer.register_step_post_hook(self._on_step_post))
        self._handles.append(model.register_forward_pre_hook(self._on_forward))

    def _check_probes(self) -> None:
        for probe in self.probes:
            if not isinstance(probe, Probe):
                raise TypeError(f"probes must be Probe instances, got {probe!r}; e.g. probes=[GradStats()]")
        names = [p.name for p in self.probes]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"probe names must be unique, {duplicated} appear twice; give one a name= of its own")
        needs_batch = [p.name for p in self.probes if PROBE_BATCH in p.needs]
        if needs_batch and self._probe_batch is None:
            raise ValueError(f"probes {needs_batch} need a probe batch; pass attach(..., probe_batch=(x, y))")

    def _distributed_checks(self, timeout: datetime.timedelta | float) -> Reducer | None:
        """The reducer for sharded (FSDP2) gradients, or None; refuses what cannot run on several processes."""
        if isinstance(timeout, int | float) and not isinstance(timeout, bool):
            timeout = datetime.timedelta(seconds=float(timeout))
        legacy = fsdp1_modules(self.model)
        if legacy:
            raise ValueError(
                f"module {legacy[0] or type(self.model).__name__!r} is wrapped in FullyShardedDataParallel (FSDP1): "
                "its gradients are shards of flat parameters that gradlens cannot attribute to parameters; shard "
                "with torch.distributed.fsdp.fully_shard (FSDP2), whose DTensor gradients gradlens combines exactly"
            )
        sharded = sharded_parameters(self.model)
        if not sharded:
            Reducer(self.topology, timeout)  # validates the timeout the same way in every mode
            return None
        batch_probes = [p.name for p in self.probes if PROBE_BATCH in p.needs]
        if batch_probes:
            raise ValueError(
                f"probes {batch_probes} evaluate the model on a probe batch, which gradlens does not run under "
                f"FSDP2 (fully_shard; {len(sharded)} sharded parameters, e.g. {sharded[0]!r}): the forward of a "
                "sharded model all-gathers parameters on every rank, and gradlens runs probe-batch probes on the "
                "writer rank only, so the other ranks would never join; measure them on a single-process or DDP "
                "run of the same network, or attach without them"
            )
        return Reducer(self.topology, timeout)

    @property
    def distributed_mode(self) -> str:
        """``"single"`` (one process), ``"ddp"`` (several, whole gradients on every rank) or ``"fsdp2"``."""
        if self._reducer is not None:
            return "fsdp2"
        return "ddp" if self.topology.distributed else "single"

    def _declared_spec(self, spec: ModelSpec | None, layers: Sequence[str] | None) -> ModelSpec | None:
        if spec is not None and layers is not None:
            raise ValueError("pass either spec= or layers=, not both")
        if layers is not None:
            return ModelSpec(layers=tuple(LayerSpec(name) for name in layers))
        if spec is not None:
            return spec
        declared = getattr(uncompiled(self.model), "gradlens_spec", None)
        return declared() if callable(declared) else None

    def _meta(self, meta: Mapping[str, object] | None) -> dict:
        return {
            "config": dict(meta or {}),
            "model": {
                "class": type(uncompiled(self.model)).__name__,
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
            "parameters": [info.row() for info in self._parameters],
            "distributed": {**self.topology.meta(), "mode": self.distributed_mode},
        }

    @property
    def context(self) -> ProbeContext:
        """The probe context; resolved at the first optimizer step (or at attach when layers are declared)."""
        if self._ctx is None:
            self._start()
        return self._ctx

    def _start(self) -> None:
        if self._spec is None:
            self._spec = self._discovered_spec()
        layers = resolve_layers(self.model, self._spec)
        ctx = ProbeContext(
            self.model, self._spec, layers, self._probe_batch, self._loss_fn, parameters=self._parameters
        )
        ctx.reducer = self._reducer
        declared, failed = {}, []
        for probe in self.probes:
            try:
                quantities = probe.quantities(ctx)
                for name, quantity in quantities.items():
                    if any(int(d) < 1 for d in quantity.shape):
                        raise ValueError(
                            f"quantity {name!r} has shape {tuple(quantity.shape)}, an empty axis: nothing to "
                            "measure (no layers or parameters found?)"
                        )
                declared[probe.name] = quantities
            except Exception as error:  # a probe that cannot even declare its records is switched off
                failed.append((probe, error))
        self._ctx = ctx
        self._declared = declared
        if not self._guard_recorder(self.recorder.start, [info.row() for info in layers], declared):
            return
        for probe, error in failed:
            self._probe_failed(probe, error, fatal=True)

    def _discovered_spec(self) -> ModelSpec:
        """The layers the forward-order tracer saw; fallbacks when a compiled graph hid the forward from it."""
        tracer, self._tracer = self._tracer, None
        tracer.remove()
        if tracer.done and (tracer.order or not tracer.candidates):
            return tracer.spec()
        if tracer.order:
            # The layers' hooks saw forwards, but the root module's own forward never ran: a LightningModule's
            # training_step calls its submodules directly. Every layer used before this first step was seen.
            return ModelSpec(layers=tuple(LayerSpec(name) for name in tracer.order))
        if not any(p.grad is not None for p in self.model.parameters()):
            raise RuntimeError(
                "gradlens discovers layers on the first forward pass, but optimizer.step() came before any "
                "forward; run the model first or pass attach(..., layers=[...])"
            )
        # A forward and backward ran, but the hooks did not fire: a graph compiled (torch.compile) before
        # attach() runs without hooks added later.
        hidden = (
            "the model's forward ran inside a graph compiled before gradlens's hooks were added (torch.compile "
            "before attach(), or an earlier model of the same class)"
        )
        if self._probe_batch is not None:
            strict = any(p.uses_layers for p in self.probes)
            eager = uncompiled(self.model)
            tracer = ForwardOrderTracer(eager, strict=strict)
            probe_ctx = ProbeContext(self.model, ModelSpec(layers=()), [], self._probe_batch, self._loss_fn)
            try:
                with probe_ctx.isolated(eval_mode=True), torch.no_grad():
                    eager_call(eager, probe_ctx.probe_batch[0])
            finally:
                tracer.remove()
            return tracer.spec()
        if not any(p.uses_layers for p in self.probes):
            message = f"{hidden}; the layer table lists the layers in registration order, not forward order"
            warnings.warn(f"gradlens: {message}; pass attach(..., layers=[...]) to fix it", stacklevel=4)
            self._guard_recorder(self.recorder.log_event, self.step, "warning", "session", message)
            return ModelSpec(layers=tuple(LayerSpec(name) for name in tracer.candidates))
        raise RuntimeError(
            f"gradlens could not discover the layers: {hidden}. Attach before the first compiled forward, pass "
            "attach(..., layers=[...]) or a probe_batch, or call torch.compiler.reset() after attach()"
        )

    # --- hooks -------------------------------------------------------------------------------------------

    def _on_forward(self, module: nn.Module, args: tuple) -> None:
        # A forward that builds a graph (not an evaluation under no_grad) starts the work of the next step.
        if torch.is_grad_enabled():
            self._forward_since_step = True

    def _on_step_pre(self, optimizer: torch.optim.Optimizer, args: tuple, kwargs: dict) -> tuple | None:
        self._in_step = True
        self._closure_fired = False
        if self._scaler_watch is not None:
            self._scaler_watch.optimizer_stepped()
        if not self.recording:
            return None
        # args are those of step(): (optimizer, closure?) — the bound optimizer comes first
        first = 1 if args and args[0] is optimizer else 0
        closure = kwargs.get("closure") if "closure" in kwargs else (args[first] if len(args) > first else None)
        if closure is not None:
            wrapped = self._wrap_closure(closure)
            if "closure" in kwargs:
                return args, {**kwargs, "closure": wrapped}
            return (*args[:first], wrapped, *args[first + 1 :]), kwargs
        self._fire()
        self._prepare_update_probes()
        return None

    def _wrap_closure(self, closure: Callable[[], object]) -> Callable[[], object]:
        def first_evaluation_fires_probes() -> object:
            loss = closure()
            if not self._closure_fired:
                self._closure_fired = True
                # the optimizer has not moved the weights yet: they are still the step's starting weights
                self._fire()
                self._prepare_update_probes()
            return loss

        return first_evaluation_fires_probes

    def _on_step_post(self, optimizer: torch.optim.Optimizer, args: tuple, kwargs: dict) -> None:
        try:
            if self.recording and self._pending_after:
                ctx = self.context
                for probe in self._pending_after:
                    self._run_probe(probe, ctx, probe.after_step)
        finally:
            self._pending_after = []
            self._in_step = False
            self._forward_since_step = False
            self.step += 1

    def _on_skipped(self, scale: float) -> None:
        """``scaler.step`` skipped the optimizer step (Inf/NaN gradients): the gradient probes fire anyway, on the
        unscaled gradients, whatever their schedule, and a ``step_skipped`` event is recorded."""
        try:
            if self.recording:
                ctx = self.context
                if self.recording and self._runs_probes:
                    ctx.step = self.step
                    for probe in self.probes:
                        reads_grads = probe.needs <= {GRADS} and not probe.measures_update
                        if reads_grads and probe.name in self._declared and probe.name not in self._disabled:
                            self._run_probe(probe, ctx, probe.compute)
                message = f"Inf/NaN gradients at loss scale {scale:g}: the scaler skipped optimizer.step()"
                self._guard_recorder(self.recorder.log_event, self.step, "step_skipped", "GradScaler", message)
        finally:
            self._forward_since_step = False
            self.step += 1

    # --- firing --------------------------------------------------------------------------------------------

    def _due(self, probe: Probe) -> bool:
        return probe.name not in self._disabled and self.schedules[probe.name](self.step)

    def _fire(self) -> None:
        """Run every probe scheduled at this step (those measuring the update only prepare here)."""
        if not self.recording:
            return
        ctx = self.context
        if not self.recording or not self._runs_probes:  # the recorder failed to start; not this rank's work
            return
        ctx.step = self.step
        for probe in self.probes:
            if self._due(probe) and not probe.measures_update and probe.name in self._declared:
                self._run_probe(probe, ctx, probe.compute)

    def _prepare_update_probes(self) -> None:
        """Probes that measure the update (``measures_update``) copy what they need before the step."""
        due = [p for p in self.probes if p.measures_update and self._due(p)]
        if not due or not self.recording or not self._runs_probes:
            return
        ctx = self.context
        if not self.recording:
            return
        ctx.step = self.step
        for probe in due:
            if probe.name in self._declared and self._attempt(probe, probe.before_step, ctx):
                self._pending_after.append(probe)

    def _attempt(self, probe: Probe, action: Callable[[ProbeContext], object], ctx: ProbeContext) -> bool:
        try:
            reads_grads_only = probe.needs <= {GRADS}
            with torch.no_grad() if reads_grads_only else contextlib.nullcontext():
                action(ctx)
        except RankFailure:
            raise  # another rank is gone: the run cannot go on, and no probe is to blame
        except Exception as error:
            self._probe_failed(probe, error)
            return False
        return True

    def _run_probe(self, probe: Probe, ctx: ProbeContext, compute: Callable[[ProbeContext], dict]) -> None:
        """Compute and record one probe; a failure is the probe's, never the training run's."""
        try:
            # Gradient-only probes need no graph; probe-batch probes choose via ctx.capture(grad=...).
            reads_grads_only = probe.needs <= {GRADS}
            with torch.no_grad() if reads_grads_only else contextlib.nullcontext():
                values = compute(ctx)
            self._check_values(probe, values)
        except RankFailure:
            raise  # another rank is gone: the run cannot go on, and no probe is to blame
        except Exception as error:
            self._probe_failed(probe, error)
            return
        self._failures[probe.name] = 0
        self._guard_recorder(self.recorder.record, probe.name, self.step, values, probe.fresh_values)

    def _check_values(self, probe: Probe, values: Mapping[str, object]) -> None:
        declared = self._declared[probe.name]
        if not isinstance(values, Mapping) or set(values) != set(declared):
            got = sorted(values) if isinstance(values, Mapping) else type(values).__name__
            raise ValueError(f"returned quantities {got}, declared {sorted(declared)}")
        for name, quantity in declared.items():
            shape = tuple(getattr(values[name], "shape", ()))
            if shape != tuple(quantity.shape):
                raise ValueError(f"quantity {name!r} has shape {shape}, declared {tuple(quantity.shape)}")

    def _probe_failed(self, probe: Probe, error: Exception, fatal: bool = False) -> None:
        """Record the failure as an event, warn once per probe, switch the probe off after repeated failures."""
        first_line = (str(error).strip().splitlines() or [""])[0]
        message = f"{type(error).__name__}: {first_line}"
        count = self._failures.get(probe.name, 0) + 1
        self._failures[probe.name] = count
        self._guard_recorder(self.recorder.log_event, self.step, "probe_error", probe.name, message)
        if probe.name not in self._warned:
            self._warned.add(probe.name)
            warnings.warn(
                f"gradlens probe {probe.name!r} failed at step {self.step} ({message}); training goes on, the "
                f"error is in run.events(); the probe is switched off after {self.MAX_FAILURES} failures in a row",
                ProbeFailureWarning,
                stacklevel=2,
            )
        if fatal or count >= self.MAX_FAILURES:
            self._disabled.add(probe.name)
            reason = "its quantities could not be declared" if fatal else f"{count} failures in a row"
            self._guard_recorder(
                self.recorder.log_event, self.step, "probe_disabled", probe.name, f"switched off: {reason}"
            )
            warnings.warn(
                f"gradlens probe {probe.name!r} is switched off at step {self.step} ({reason}; last: {message})",
                ProbeFailureWarning,
                stacklevel=2,
            )

    def _guard_recorder(self, action: Callable[..., object], *args: object) -> bool:
        """Call the recorder; a failure stops recording (warned once) instead of ending training."""
        if not self.recording:
            return False
        try:
            action(*args)
        except Exception as error:
            self._recorder_failed(error)
            return False
        return True

    def _recorder_failed(self, error: Exception) -> None:
        self.recording = False
        first_line = (str(error).strip().splitlines() or [""])[0]
        warnings.warn(
            f"gradlens stopped recording to {self.path} at step {self.step} ({type(error).__name__}: "
            f"{first_line}); training goes on, the file keeps what was flushed before",
            RecorderFailureWarning,
            stacklevel=3,
        )
        with contextlib.suppress(Exception):
            self.recorder.close(status="failed")

    # --- user calls ----------------------------------------------------------------------------------------

    def flush(self) -> None:
        """Commit every buffered record now (e.g. before writing a training checkpoint).

        A recorder failure stops recording (warned once), never training.
        """
        self._guard_recorder(self.recorder.flush)

    def log(self, step: int | None = None, **scalars: float) -> None:
        """Record scalars (loss, accuracy, lr, ...) at the step they belong to.

        Rule (without ``step``): a value logged after a forward pass that builds a graph (grad enabled) and
        before the next ``optimizer.step()`` belongs to that upcoming step — under gradient accumulation the
        loss of every micro-batch lands on the step its gradient feeds; so does a value logged inside a closure
        during ``optimizer.step(closure)``. A value logged after ``optimizer.step()`` and before the next such
        forward belongs to the step just taken (0 before the first step): per-step losses logged after the
        step, evaluations under ``torch.no_grad()``, epoch summaries. ``step=`` overrides the rule.

        Raises:
            ValueError: a value that is not a real number or a name longer than 64 bytes (the recorder's rule).
        """
        if step is not None:
            at = int(step)
        elif self._in_step or self._forward_since_step:
            at = self.step
        else:
            at = max(self.step - 1, 0)
        values = {k: float(v) for k, v in scalars.items()}
        if not self.recording:
            return
        try:
            self.recorder.log_scalars(at, **values)
        except ValueError:
            raise
        except Exception as error:
            self._recorder_failed(error)

    def close(self, status: str = "finished") -> None:
        """Remove every hook, flush and close the file. Idempotent; a failing file is warned, not raised."""
        if self._closed:
            return
        self._closed = True
        self._remove_hooks()
        if self.recording:
            self.recording = False
            try:
                self.recorder.close(status=status)
            except Exception as error:
                self.recording = True  # let _recorder_failed report it once
                self._recorder_failed(error)
                self.recording = False

    def _remove_hooks(self) -> None:
        if getattr(self, "_scaler_watch", None) is not None:
            self._scaler_watch.remove()
            self._scaler_watch = None
        if getattr(self, "_hook_guards", False):
            self._hook_guards = False
            _HookGuards.release()
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        if self._tracer is not None:
            self._tracer.remove()
            self._tracer = None

    def __enter__(self) -> Session:
        return self

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: object) -> None:
        if exc is not None:
            self.fail(exc)
        else:
            self.close(status="finished")

    def fail(self, error: BaseException | None = None) -> None:
        """Close the file with status ``failed``; in a run of several processes, add a note to ``error`` saying
        which rank stopped where and what became of the file (the error may come from a collective that a dead
        rank left waiting)."""
        if error is not None and self.topology.distributed and hasattr(error, "add_note"):
            note = f"gradlens: {self.topology.describe()} stopped at step {self.step}; " + (
                f"{self.path} is closed with status 'failed' and keeps every record flushed before"
                if self.topology.is_writer
                else f"rank {self.topology.writer_rank} writes {self.path}"
            )
            if _from_collective(error):
                note += (
                    ". The error comes from a collective: another rank has probably died or stopped responding; "
                    "the first error is in that rank's log"
                )
            error.add_note(note)
        self.close(status="failed")


def _from_collective(error: BaseException) -> bool:
    """True for errors of torch.distributed's collectives (a peer that died closes its connections)."""
    if isinstance(error, (RankFailure, getattr(torch.distributed, "DistError", RankFailure))):
        return True
    text = str(error)
    return any(mark in text for mark in ("gloo", "NCCL", "Connection closed by peer", "Connection reset by peer"))


def _unwrapped(model: nn.Module) -> nn.Module:
    """The module inside ``torch.compile`` and DDP/DataParallel wrappers (any nesting)."""
    while True:
        inner = unwrap_data_parallel(uncompiled(model))
        if inner is model:
            return model
        model = inner


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
    scaler: object | None = None,
    writer_rank: int = 0,
    collective_timeout: datetime.timedelta | float = DEFAULT_TIMEOUT,
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
        scaler: the run's ``torch.amp.GradScaler``: steps it skips (Inf/NaN gradients) are recorded as
            ``step_skipped`` events, with the gradient probes fired on their unscaled gradients.
        writer_rank: under ``torch.distributed``, the rank that writes the file (the others write nothing).
            Call ``attach`` on every rank with the same arguments.
        collective_timeout: how long gradlens's own all-reduce (FSDP2) waits for the other ranks before it
            raises :class:`gradlens.distributed.RankFailure` (a ``timedelta`` or seconds).

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
        scaler,
        writer_rank,
        collective_timeout,
    )
