"""A set of short circuits installed on one model: :class:`ShortCircuits` (listable, drawable, switchable off,
removable) and :func:`gap_short_circuits`, the set Algorithm 1's rule gives for some rears (document 000).

Installing puts one forward hook on every involved module (every handle is kept and removed by
:meth:`ShortCircuits.remove`); what the hooks do in the backward pass is :mod:`gradlens.models.short_circuit.inject`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from gradlens.models.short_circuit.circuit import ShortCircuit, select_fronts
from gradlens.models.short_circuit.inject import _CONV_WEIGHT_GRAD, _FrontInject, _Slot


def _check_front_type(name: str, module: nn.Module) -> None:
    # Exact types: a subclass (e.g. a re-parametrised weight) may compute something other than W a + b.
    if type(module) is nn.Linear:
        return
    if type(module) in _CONV_WEIGHT_GRAD:
        if isinstance(module.padding, str) or module.padding_mode != "zeros":
            raise ValueError(
                f"short circuit front {name!r} uses padding={module.padding!r}, "
                f"padding_mode={module.padding_mode!r}; only integer zero padding is supported"
            )
        return
    raise ValueError(
        f"short circuit front {name!r} is a {type(module).__name__}; the front must be exactly an nn.Linear "
        f"or nn.Conv1d/2d/3d computing W a + b (the layer whose weight gradient eq. 13 changes)"
    )


def _static_width(module: nn.Module) -> tuple[str, int] | None:
    if isinstance(module, nn.Linear):
        return "features", module.out_features
    if isinstance(module, nn.modules.conv._ConvNd):
        return "channels", module.out_channels
    return None


class ShortCircuits:
    """A set of short circuits installed on one model: listable, drawable, switchable off, removable.

    Example::

        scs = ShortCircuits([ShortCircuit("fc2", "fc4", weight=0.2)]).install(model)
        model.short_circuits is scs      # True while installed
        scs.enabled = False              # plain backprop again (hooks stay, do nothing)
        scs.remove()                     # hooks gone, model exactly as before

    Args:
        circuits: the short circuits; pairs (front, rear) must be unique.
    """

    def __init__(self, circuits: Iterable[ShortCircuit]) -> None:
        self._circuits = tuple(circuits)
        seen: set[tuple[str, str]] = set()
        for sc in self._circuits:
            if (sc.front, sc.rear) in seen:
                raise ValueError(f"short circuit {sc.front!r} <- {sc.rear!r} is listed twice; list it once")
            seen.add((sc.front, sc.rear))
        self.enabled = True
        self._model: nn.Module | None = None
        self._handles: list[RemovableHandle] = []
        self._pending: dict[ShortCircuit, _Slot] = {}

    def list(self) -> list[ShortCircuit]:
        """The short circuits, in the order given."""
        return list(self._circuits)

    def __iter__(self) -> Iterator[ShortCircuit]:
        return iter(self._circuits)

    def __len__(self) -> int:
        return len(self._circuits)

    def __repr__(self) -> str:
        body = ", ".join(f"{sc.front}<-{sc.rear} (w={sc.weight}, {sc.mode})" for sc in self._circuits)
        return f"ShortCircuits([{body}], enabled={self.enabled}, installed={self.installed})"

    @property
    def installed(self) -> bool:
        """Whether the set is installed on a model."""
        return self._model is not None

    def fronts(self) -> list[str]:
        """Front layer names, unique, in the order of first appearance."""
        return list(dict.fromkeys(sc.front for sc in self._circuits))

    def rears(self) -> list[str]:
        """Rear module names, unique, in the order of first appearance."""
        return list(dict.fromkeys(sc.rear for sc in self._circuits))

    def install(self, model: nn.Module) -> ShortCircuits:
        """Check the preconditions, hook the front and rear modules, set ``model.short_circuits = self``.

        Checked here: both names exist, the front is a Linear/Conv layer, the front is registered before
        the rear (the zoo's forward order), and Linear/Conv widths agree. The full output shapes are
        compared at every forward (they depend on the input) with a ``ValueError`` naming both.

        Raises:
            ValueError: a precondition fails, the set is already installed, or ``model`` already carries
                short circuits.
        """
        if self._model is not None:
            raise ValueError("this ShortCircuits set is already installed; call remove() first")
        if getattr(model, "short_circuits", None) is not None:
            raise ValueError("the model already has short circuits; call model.short_circuits.remove() first")
        order = {name: i for i, (name, _) in enumerate(model.named_modules())}
        modules = dict(model.named_modules())
        for sc in self._circuits:
            for role, name in (("front", sc.front), ("rear", sc.rear)):
                if name not in order:
                    raise ValueError(
                        f"short circuit {role} {name!r} is not a module of {type(model).__name__}; "
                        f"use a name from model.named_modules()"
                    )
            _check_front_type(sc.front, modules[sc.front])
            if order[sc.front] >= order[sc.rear]:
                raise ValueError(
                    f"short circuit front {sc.front!r} does not come before rear {sc.rear!r}; "
                    f"the front index must be smaller than the rear index (swap them)"
                )
            front_w, rear_w = _static_width(modules[sc.front]), _static_width(modules[sc.rear])
            if front_w is not None and rear_w is not None and front_w != rear_w:
                raise ValueError(
                    f"short circuit {sc.front!r} <- {sc.rear!r} joins layers of different shapes: front "
                    f"output has {front_w[1]} {front_w[0]}, rear output {rear_w[1]} {rear_w[0]}; "
                    f"pick layers with the same output shape"
                )
        by_module: dict[str, tuple[list[ShortCircuit], list[ShortCircuit]]] = {}
        for sc in self._circuits:
            by_module.setdefault(sc.front, ([], []))[0].append(sc)
            by_module.setdefault(sc.rear, ([], []))[1].append(sc)
        for name, (as_front, as_rear) in by_module.items():
            hook = self._make_hook(tuple(as_front), tuple(as_rear))
            self._handles.append(modules[name].register_forward_hook(hook))
        self._model = model
        model.short_circuits = self
        return self

    def remove(self) -> None:
        """Remove every hook and ``model.short_circuits``; the model is exactly the plain backbone again.

        Calling it on a set that is not installed does nothing.
        """
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._pending.clear()
        if self._model is not None and getattr(self._model, "short_circuits", None) is self:
            del self._model.short_circuits
        self._model = None

    def _make_hook(self, as_front: tuple[ShortCircuit, ...], as_rear: tuple[ShortCircuit, ...]) -> Any:
        def hook(module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor | None:
            if not self.enabled or not torch.is_grad_enabled() or not output.requires_grad:
                return None
            result = output
            if as_front:
                slots = tuple(_Slot(sc, output.shape) for sc in as_front)
                for slot in slots:
                    self._pending[slot.circuit] = slot
                bias = getattr(module, "bias", None)
                result = _FrontInject.apply(output, args[0], module.weight, bias, module, slots)
            if as_rear:
                self._attach_rear(as_rear, result)
            return result if as_front else None

        return hook

    def _attach_rear(self, circuits: tuple[ShortCircuit, ...], output: torch.Tensor) -> None:
        slots = []
        for sc in circuits:
            slot = self._pending.pop(sc, None)
            if slot is None:  # the front did not run in grad mode during this forward
                continue
            if slot.front_shape != output.shape:
                raise ValueError(
                    f"short circuit {sc.front!r} <- {sc.rear!r} joins outputs of different shapes: front "
                    f"{sc.front!r} {tuple(slot.front_shape)}, rear {sc.rear!r} {tuple(output.shape)}; "
                    f"pick layers with the same output shape"
                )
            slots.append(slot)
        if not slots:
            return

        def store(grad: torch.Tensor) -> None:
            for slot in slots:
                if slot.consumed:
                    raise RuntimeError(
                        f"the sensitivity of rear {slot.circuit.rear!r} arrived after the backward of front "
                        f"{slot.circuit.front!r}; the rear must lie downstream of the front in the graph"
                    )
                slot.delta = grad

        output.register_hook(store)


def gap_short_circuits(
    candidates: Sequence[str],
    rears: Sequence[str],
    k: int,
    *,
    weight: float = 0.2,
    mode: str = "weight_only",
) -> ShortCircuits:
    """Short circuits from each rear to the fronts :func:`select_fronts` picks (several rears: multiple SC).

    Raises:
        ValueError: the rule selects no front at all (say which rears and ``k``).
    """
    circuits = [
        ShortCircuit(front, rear, weight, mode) for rear in rears for front in select_fronts(candidates, rear, k)
    ]
    if not circuits:
        raise ValueError(
            f"the rule mod(l, {k}) == 0 and l < sc selects no front layer for rears {list(rears)} among "
            f"{len(candidates)} candidates; use a smaller gap k or a later rear"
        )
    return ShortCircuits(circuits)
