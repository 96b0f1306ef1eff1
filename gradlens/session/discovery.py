"""Which layers a session measures: declared (``spec=``, ``layers=``, the model's ``gradlens_spec()``) or
discovered in forward order on the first forward pass.

Discovery uses a one-shot :class:`~gradlens.layers.ForwardOrderTracer`, removed at the first optimizer step.
When a compiled graph hid that forward from the tracer (``torch.compile`` before ``attach``), the layers come
from an eager, side-effect-free forward of the probe batch; without one, probes that do not read layers get
the registration order (with a warning recorded in the run's events), and probes that do are refused.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from torch import nn

from gradlens.layers import ForwardOrderTracer
from gradlens.naming import uncompiled
from gradlens.probes.base import Probe
from gradlens.probes.context import LossFn, ProbeContext, eager_call
from gradlens.spec import LayerSpec, ModelSpec


class LayerDiscovery:
    """The layer table of :class:`gradlens.session.Session` (a mixin): declared, or traced on the first forward.

    Reads the session's ``model``, ``probes``, ``step``, ``recorder``, ``_probe_batch`` and ``_loss_fn``; keeps
    the tracer in ``_tracer`` until the first step.
    """

    model: nn.Module
    probes: list[Probe]
    step: int
    _tracer: ForwardOrderTracer | None
    _probe_batch: tuple[torch.Tensor, torch.Tensor] | None
    _loss_fn: LossFn

    def _declared_spec(self, spec: ModelSpec | None, layers: Sequence[str] | None) -> ModelSpec | None:
        """``spec``, or ``layers`` as a spec, or the model's own ``gradlens_spec()``; None: discover them."""
        if spec is not None and layers is not None:
            raise ValueError("pass either spec= or layers=, not both")
        if layers is not None:
            return ModelSpec(layers=tuple(LayerSpec(name) for name in layers))
        if spec is not None:
            return spec
        declared = getattr(uncompiled(self.model), "gradlens_spec", None)
        return declared() if callable(declared) else None

    def _trace_forward_order(self) -> None:
        """Watch the first forward pass for the layers (no layers were declared)."""
        # strict: an unknown parameter-owning module type is an error only when a probe reads layers
        self._tracer = ForwardOrderTracer(self.model, strict=any(p.uses_layers for p in self.probes))

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
