"""Where a session's hooks are installed and removed, and what each hook does when training calls it.

The session owns every hook gradlens installs during training and removes them all on close:

- one optimizer step pre-hook, where probes fire (gradients are complete, weights not yet updated); with
  ``optimizer.step(closure)`` it wraps the closure so that probes fire after the closure's first evaluation;
- one optimizer step post-hook, where the step counter advances and update probes (``UpdateRatio``) record;
- one forward pre-hook on the model, which tells :meth:`Session.log` that a forward of the next step began;
- with ``scaler=``, a wrapper on ``scaler.step`` (:class:`~gradlens.amp.ScalerWatch`) that reports skipped steps;
- the clipping watch (:class:`~gradlens.session.clipping.ClipWatch`), shared by every attached session;
- for probes that need ``ACTIVATIONS``, forward hooks on the watched modules, in place only for the steps
  where such a probe is due (:class:`~gradlens.session.activations.ActivationCapture`);
- the compile guards (:class:`~gradlens.session.compiled.HookGuards`) while the session is attached.

(The one-shot forward-order tracer belongs to layer discovery, :mod:`gradlens.session.discovery`, and the
short-lived forward hooks of a probe-batch evaluation to :meth:`gradlens.probes.context.ProbeContext.capture`.)
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from gradlens.amp import ScalerWatch
from gradlens.layers import ForwardOrderTracer
from gradlens.probes.base import ACTIVATIONS, GRADS, Probe
from gradlens.session.activations import ActivationCapture
from gradlens.session.clipping import ClipRecord, ClipWatch
from gradlens.session.compiled import HookGuards, hooks_unguarded


class StepHooks:
    """The hooks of :class:`gradlens.session.Session` (a mixin): installs, runs and removes them.

    Reads the session's ``model``, ``optimizer``, ``probes``, ``recorder``, ``context`` and the firing methods
    (:class:`~gradlens.session.firing.ProbeFiring`); keeps the hook handles and where training is in the step
    cycle (``_in_step``, ``_forward_since_step``: the input of the logging rule, :mod:`gradlens.session.scalars`).
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    step: int
    recording: bool
    _handles: list
    _tracer: ForwardOrderTracer | None
    _scaler_watch: ScalerWatch | None
    _in_step: bool
    _forward_since_step: bool
    _closure_fired: bool
    _pending_after: list[Probe]
    _ctx: object  # the ProbeContext once resolved at the first step (Session.context)
    _clips: ClipRecord
    _activations: ActivationCapture | None

    def _install_hooks(self) -> None:
        """The compile guards, the clipping watch, the optimizer's step pre- and post-hooks, the model's
        forward pre-hook, and the activation hooks when the first step is due for them."""
        self._hook_guards = HookGuards.acquire()
        ClipWatch.register(self._clips)
        self._handles.append(self.optimizer.register_step_pre_hook(self._on_step_pre))
        self._handles.append(self.optimizer.register_step_post_hook(self._on_step_post))
        self._handles.append(self.model.register_forward_pre_hook(self._on_forward))
        if self._runs_probes and any(ACTIVATIONS in p.needs for p in self.probes):
            self._activations = ActivationCapture(self.model)
            self._arm_activations(keep=True)  # in place at attach: a graph compiled next includes them

    def _arm_activations(self, keep: bool = False) -> None:
        """Hook the watched modules for the next step when an ``ACTIVATIONS`` probe is due at it; else unhook,
        unless ``keep`` or dynamo would not notice (:func:`~gradlens.session.compiled.hooks_unguarded`)."""
        if self._activations is None:
            return
        alive = [p for p in self.probes if ACTIVATIONS in p.needs and p.name not in self._disabled]
        alive = alive if self.recording else []
        due = [p for p in alive if self._due(p)]
        keep = keep or (self._activations.installed and hooks_unguarded())
        self._activations.arm(due, alive if keep else due)

    def _watch_scaler(self, scaler: object) -> None:
        """Wrap ``scaler.step`` so that a step the GradScaler skips reaches :meth:`_on_skipped`."""
        self._scaler_watch = ScalerWatch(scaler, self.optimizer, self._on_skipped)

    def _remove_hooks(self) -> None:
        """Remove every hook this session installed (also after a failed attach: each part may be missing)."""
        if getattr(self, "_scaler_watch", None) is not None:
            self._scaler_watch.remove()
            self._scaler_watch = None
        if getattr(self, "_hook_guards", False):
            self._hook_guards = False
            HookGuards.release()
        if getattr(self, "_clips", None) is not None:
            ClipWatch.unregister(self._clips)
        if getattr(self, "_activations", None) is not None:
            self._activations.remove()
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        if self._tracer is not None:
            self._tracer.remove()
            self._tracer = None

    def _on_forward(self, module: nn.Module, args: tuple) -> None:
        # A forward that builds a graph (not an evaluation under no_grad) starts the work of the next step.
        if torch.is_grad_enabled():
            if self._forward_since_step and self._activations is not None:
                self._activations.second_forward()  # only the step's first training forward is measured
            self._forward_since_step = True

    def _on_step_pre(self, optimizer: torch.optim.Optimizer, args: tuple, kwargs: dict) -> tuple | None:
        self._in_step = True
        if self._activations is not None:
            self._activations.disarm()  # what the training forward showed is final; probe batches are not it
        if self._scaler_watch is not None:
            self._scaler_watch.optimizer_stepped()
        if not self.recording:
            return None
        if self._ctx is not None and not self._flight and not any(self._due(p) for p in self.probes):
            return None  # a skipped step: nothing fires, so the closure needs no wrapper either
        self._closure_fired = False
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
            self._arm_activations()
            self._log_clips()
        self._live_after_step()  # may raise TrainingStopped (stop_on): the step itself is complete

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
                self._event(self.step, "step_skipped", "GradScaler", message)
        finally:
            self._forward_since_step = False
            self.step += 1
            self._arm_activations()
            self._log_clips()
        self._live_after_step()
