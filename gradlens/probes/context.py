"""What a probe reads when it fires: ``ProbeContext`` and the ``Captured`` result of its side-effect-free forward.

The session (:mod:`gradlens.session`) builds one ``ProbeContext`` per run and hands it to every probe; the types
live here, below both the probes (:mod:`gradlens.probes.base`) and the session, so neither imports the other's
home. ``ProbeContext.capture`` installs short-lived forward hooks on the modules it is asked about and removes
them before returning; ``ProbeContext.isolated`` restores buffers (BN running statistics), train/eval flags and
the global RNG state, so a probe-batch evaluation leaves training as it found it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

from gradlens.distributed import Reducer, unwrap_data_parallel
from gradlens.layers import LayerInfo, ParameterInfo, describe_parameters
from gradlens.naming import module_table, uncompiled
from gradlens.spec import ModelSpec

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def eager_call(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``model(x)`` run eagerly: a model compiled in place (``model.compile()``) would run its compiled graph,
    which ignores hooks added after compilation."""
    if getattr(model, "_compiled_call_impl", None) is not None:
        return model._call_impl(x)
    return model(x)


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


def _unwrapped(model: nn.Module) -> nn.Module:
    """The module inside ``torch.compile`` and DDP/DataParallel wrappers (any nesting)."""
    while True:
        inner = unwrap_data_parallel(uncompiled(model))
        if inner is model:
            return model
        model = inner
