"""Activation hooks: the session's forward hooks for probes that need ``ACTIVATIONS`` (module inputs/outputs on
the training batch), installed only for the steps where such a probe is due.

Timeline of one due step s (the session calls :meth:`ActivationCapture.arm` when step s becomes the next step,
at attach or right after step s-1):

1. ``arm``: one forward hook per watched module (and a forward pre-hook where a probe reads the module's input
   before it runs), shared by every due probe that watches it (duplicates merged); each probe's capture begins.
2. The first forward of the step with grad enabled is measured. The session's forward pre-hook on the model
   calls :meth:`second_forward` when a second such forward starts in the same step (gradient accumulation, a
   closure evaluated again): measuring stops. Forwards without grad (evaluation) are ignored. When the model's
   own forward is never called (a LightningModule whose ``training_step`` calls submodules), every training
   forward before the step is measured.
3. ``disarm`` in the optimizer step pre-hook, before any probe fires (so that a probe-batch evaluation is
   never taken for the training batch); the probe then records from what it captured.
4. After the step, ``arm`` again when the next step is due, else the hooks are removed: in eager mode a step
   where no such probe is due runs without any of these hooks (nothing to pay).

``torch.compile``: the hooks are traced into a compiled graph like any module hook, and each hook reads
``armed`` first, so the graph guards on that flag (two cached variants: measuring, and hooks compiled away).
Whether a graph notices hooks added or removed later depends on dynamo's hook guards: with them on
(:class:`~gradlens.session.compiled.HookGuards`, when dynamo was loaded at attach) adding and removing the hooks
switches between cached graphs; with them off (``torch.compile`` called after ``attach``, dynamo's default),
a graph traced without the hooks would never run them. So the hooks are in place at attach whatever the
schedule (the first compiled graph includes them), and once dynamo is loaded without hook guards they are never
removed until the session closes (only ``armed`` changes). A model compiled for the first time on a step
where the hooks had already been removed (dynamo loaded later in the run) runs without them: each due firing
then records the probe's failure (“no training forward ... seen”), never a silent gap.

A probe's error inside a hook never reaches the training loop: it is kept and reported as that probe's
failure when it fires.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from gradlens.naming import module_table
from gradlens.probes.base import Probe


class ActivationCapture:
    """The forward hooks of the session's ``ACTIVATIONS`` probes (see the module docstring).

    Attributes:
        armed: the next training forward is measured.
        errors: probe name -> the first error one of its hook calls raised in this capture.
    """

    def __init__(self, model: nn.Module) -> None:
        self._modules = module_table(model)
        self.armed = False
        self.errors: dict[str, Exception] = {}
        self._layout: dict[str, tuple[bool, tuple[Probe, ...]]] = {}  # module -> (input hook?, its probes)
        self._handles: list = []
        self._due: tuple[Probe, ...] = ()

    @property
    def installed(self) -> bool:
        """Whether hooks are in place now."""
        return bool(self._handles)

    def arm(self, due: list[Probe], hooked: list[Probe]) -> None:
        """Measure the next step's first training forward for the ``due`` probes, with hooks in place for the
        modules the ``hooked`` probes watch (a superset of ``due``; the hooks in place are reused when the
        layout is unchanged); no probe hooked: remove every hook."""
        if not hooked:
            self.remove()
            return
        layout: dict[str, tuple[bool, tuple[Probe, ...]]] = {}
        for probe in hooked:
            for name, reads_input in probe.watched_modules().items():
                before, watchers = layout.get(name, (False, ()))
                layout[name] = (before or reads_input, (*watchers, probe))
        if layout != self._layout:
            self.remove()
            self._install(layout)
        self.errors = {}
        self._due = tuple(due)
        for probe in due:
            probe.begin_capture()
        self.armed = bool(due)

    def _install(self, layout: dict[str, tuple[bool, tuple[Probe, ...]]]) -> None:
        for name, (before, watchers) in layout.items():
            module = self._modules[name]
            if before:
                self._handles.append(module.register_forward_pre_hook(self._before(name, watchers)))
            self._handles.append(module.register_forward_hook(self._after(name, watchers)))
        self._layout = layout

    def _before(self, name: str, watchers: tuple[Probe, ...]) -> Callable:
        def hook(module: nn.Module, args: tuple) -> None:
            if self.armed and torch.is_grad_enabled():
                with torch.no_grad():
                    for probe in watchers:
                        if probe in self._due and probe.name not in self.errors:
                            try:
                                probe.before_module(name, args)
                            except Exception as error:  # the probe's failure, reported when it fires
                                self.errors[probe.name] = error

        return hook

    def _after(self, name: str, watchers: tuple[Probe, ...]) -> Callable:
        def hook(module: nn.Module, args: tuple, output: object) -> None:
            if self.armed and torch.is_grad_enabled():
                with torch.no_grad():
                    for probe in watchers:
                        if probe in self._due and probe.name not in self.errors:
                            try:
                                probe.after_module(name, args, output)
                            except Exception as error:  # the probe's failure, reported when it fires
                                self.errors[probe.name] = error

        return hook

    def measures(self, probe: Probe) -> bool:
        """Whether ``probe`` was armed for this step's forward (a probe that became due later, e.g. by a trigger
        logged between the forward and the step, has nothing to record yet)."""
        return probe in self._due

    def second_forward(self) -> None:
        """A second training forward began in this step: measure no more."""
        self.armed = False

    def disarm(self) -> None:
        """The step is being taken: what was captured is final."""
        self.armed = False

    def remove(self) -> None:
        """Remove every hook (idempotent)."""
        self.armed = False
        self._due = ()
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._layout = {}
