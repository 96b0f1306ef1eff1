"""ActivationStats: per activation module, the fraction of dead and of saturated units, mean and std of its output,
measured on the training batch (the first forward of the step) through forward hooks the session installs.

Per label ℓ (an activation module) and firing, with y the module's output ``[B, ...]`` on the step's first
training forward and U the set of its units (below):

- ``dead_fraction`` = |{u ∈ U : y_u = 0 exactly for every sample}| / |U|: a unit that outputs exactly zero on
  the whole batch passes no signal forward and (for ReLU-like functions) no gradient backward;
- ``saturated_fraction`` = |{u ∈ U : every sample of u is in a flat tail of the function, and u is not dead}|
  / |U|: units whose local slope is near zero on the whole batch, so the gradient through them is cut at least
  50-fold. Dead and saturated units are disjoint; ReLU's only flat region is its zero, so its saturated
  fraction is 0 (its stuck units are dead);
- ``mean``, ``std`` = mean and population standard deviation (divisor N) of every entry of y;
- ``unit_axis`` (int8): the axis of y that indexes the units (below), 0 where each entry of a sample is a unit.

**Flat tails** and the reductions: :mod:`gradlens.metrics.activations` (tails chosen so that |f'| <= 0.02 there,
i.e. a gradient through the unit shrinks at least 50-fold: tanh |y| > 0.99, sigmoid y < 0.01 or > 0.99, GELU
input x < -3, SiLU/Mish x < -6, ...; the table with each threshold's reason is in that module's docstring).

For the input tests the session also hooks the module's input before it runs (an in-place SiLU overwrites it).
The mapping from module type to handler is explicit (``gradlens.metrics.activations.ACTIVATION_KINDS``,
extended with ``register_activation``); a requested module of another type is an error naming the type.
Functional activations inside a module's ``forward`` (``torch.relu(x)``, ``F.gelu(x)``) are not modules and are
invisible to hooks: measure them by making them modules (``nn.ReLU()``) or by naming the module that applies
them only if its output *is* the activation.

**Units** (never guessed). The unit axis of each label is, in order: declared (``unit_axes={name: axis}`` or
``ModelSpec.feature_dims``); else decided by :func:`gradlens.spec.feature_dim` from the shape and the module
that produced the activation's input (the last module of a known type, :func:`gradlens.spec.feature_kind`,
whose forward finished before the activation ran, seen at the first captured forward): ``[B, F]`` → the F
features; ``nn.Linear``/``LayerNorm``/``Embedding``/attention → the last axis (``[B, T, H]``: H hidden units,
the B·T tokens are the samples); convolution/``BatchNorm``/``GroupNorm`` → the channels, axis 1 (``[B, C, H,
W]``: a channel is dead when it is zero at every position of every sample). Where no rule decides, the unit
is each entry of one sample (``unit_axis`` 0: axis 0 is taken as the sample axis, PyTorch's batch-first
convention), a definition that needs no feature axis, said once as a warning naming the fix
(``unit_axes={name: axis}``). Under that definition a dead channel still counts fully (all its entries are
dead), and an entry can be dead without its channel being dead, so it reads at least the channel figure.

**When** (see :mod:`gradlens.session.activations`): on a step where the probe is due, the session hooks the
modules before that step's forward; the first training forward (grad enabled) of the step is measured. Under
gradient accumulation that is the first micro-batch only (not the whole effective batch); forwards without
grad (evaluation) are never measured. A module called several times in that forward (one ``nn.ReLU`` reused
in a block) is measured over all its calls: units and entries of every call pooled. A label whose module did
not run in that forward records NaN (not measured). Nothing is recorded per sample; the probe adds no RNG draw
and does not change the forward (the hooks return nothing).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping

import torch
from torch import nn

from gradlens.metrics.activations import (
    ACTIVATION_KINDS,
    ActivationKind,
    CallStats,
    Layout,
    activation_kind,
    call_stats,
    nearest_tail,
    sample_dims,
    summarize,
)
from gradlens.naming import module_table, strip_wrappers
from gradlens.probes.base import ACTIVATIONS, Probe, Quantity, Schedule
from gradlens.spec import ModelSpec, feature_dim, feature_kind


class ActivationStats(Probe):
    """Dead and saturated units, mean and std of every activation module's output on the training batch.

    See the module docstring for the definitions, the flat tails, the units and when the batch is measured.

    Args:
        every: schedule (default: the session's; ``every=10`` keeps the cost within a few percent of training).
        modules: names of the activation modules to measure (with or without wrapper prefixes); default every
            module whose type is in :data:`ACTIVATION_KINDS`.
        unit_axes: module name -> the axis of its output that indexes the units (overrides the spec's
            ``feature_dims``), e.g. ``{"encoder.act": -1}``.
        name: the HDF5 group.

    Raises (at ``attach``): ``ValueError`` for an unknown module name, a module whose type has no handler
    (naming the type and ``gradlens.metrics.activations.register_activation``), or a model without activation
    modules.
    """

    needs = frozenset({ACTIVATIONS})
    uses_layers = False
    fresh_values = True

    def __init__(
        self,
        every: int | Iterable[int] | Schedule | None = None,
        modules: Iterable[str] | None = None,
        unit_axes: Mapping[str, int] | None = None,
        name: str = "activation_stats",
    ) -> None:
        super().__init__(every)
        self.name = name
        self.requested = None if modules is None else list(modules)
        self.unit_axes = {strip_wrappers(k): int(v) for k, v in (unit_axes or {}).items()}
        self.kinds: dict[str, ActivationKind] = {}
        self._owners: dict[str, nn.Module] = {}  # modules that fix a unit axis (feature_kind), by name
        self._declared: dict[str, int] = {}
        self._axes: dict[str, int] = {}  # label -> resolved unit axis
        self._calls: dict[str, list[CallStats]] = {}
        self._inputs: dict[str, torch.Tensor] = {}  # label -> flat-tail mask of the input of the running call
        self._producer: str | None = None  # the last owner whose forward finished
        self._layout: tuple[tuple, Layout] | None = None  # the last firing's layout, reused while it repeats

    # --- configuration (attach) ------------------------------------------------------------------------

    def validate(self, model: nn.Module, spec: ModelSpec | None) -> None:
        table = module_table(model)
        if self.requested is None:
            names = [strip_wrappers(n) for n, m in model.named_modules() if activation_kind(m) is not None]
            names = list(dict.fromkeys(n for n in names if n))
            if not names:
                raise ValueError(
                    f"ActivationStats found no activation module in {type(model).__name__} (types: "
                    f"{sorted(t.__name__ for t in ACTIVATION_KINDS)}); functional activations (torch.relu(x) inside "
                    "a forward) are invisible to hooks: make them modules, or name modules=[...]"
                )
        else:
            names = []
            for name in self.requested:
                if name not in table:
                    raise ValueError(
                        f"ActivationStats: module {name!r} does not exist in {type(model).__name__}; names look "
                        f"like {[n for n in table if n][:4]} (see model.named_modules())"
                    )
                names.append(strip_wrappers(name))
        for name in self.unit_axes:
            if name not in table:
                raise ValueError(
                    f"ActivationStats: module {name!r} in unit_axes does not exist in {type(model).__name__}"
                )
        kinds = {}
        for name in names:
            kind = activation_kind(table[name])
            if kind is None:
                kind_type = type(table[name]).__name__
                raise ValueError(
                    f"ActivationStats has no handler for {kind_type} (module {name!r}); register one with "
                    f"gradlens.metrics.activations.register_activation({kind_type}, handler) or leave the "
                    "module out of modules=[...]"
                )
            kinds[name] = kind
        self.kinds = kinds
        # one list per label for the whole run, cleared in place: a graph compiled by torch.compile replays its
        # appends into the containers it traced, so they must stay the same objects
        self._calls = {label: [] for label in kinds}
        self._index = {label: i for i, label in enumerate(kinds)}
        self._declared = {**dict((spec.feature_dims if spec is not None else {}) or {}), **self.unit_axes}
        self._owners = {strip_wrappers(n): m for n, m in model.named_modules() if n and feature_kind(m) is not None}
        self._axes = {}

    def meta(self) -> dict:
        """``kinds`` per label, the flat-tail test per kind and the unit rule (stored in ``meta["probes"]``)."""
        return {
            "kinds": {label: kind.name for label, kind in self.kinds.items()},
            "saturation": {kind.name: kind.definition for kind in self.kinds.values()},
            "units": (
                "unit_axis quantity: the axis of the output that indexes the units (declared, else decided by "
                "gradlens.spec.feature_dim from the producing module); 0: each entry of a sample is a unit"
            ),
            "batch": "the first training forward of the step (under gradient accumulation: the first micro-batch)",
        }

    def quantities(self, ctx) -> dict[str, Quantity]:
        labels = {"layer": list(self.kinds)}
        shape = (len(self.kinds),)
        floats = {q: Quantity(shape, ("layer",), labels, "float32") for q in QUANTITIES}
        return {**floats, "unit_axis": Quantity(shape, ("layer",), labels, "int8")}

    # --- what the session's hooks call ------------------------------------------------------------------

    def watched_modules(self) -> dict[str, bool]:
        """Module name -> whether its input is needed before it runs. The modules that fix a unit axis are
        watched too until every label's axis is known (the first captured forward)."""
        watched = {label: kind.reads_input for label, kind in self.kinds.items()}
        if len(self._axes) < len(self.kinds):
            watched.update({name: False for name in self._owners if name not in watched})
        return watched

    def begin_capture(self) -> None:
        """A new step's capture starts: forget the previous one (in place, see :meth:`validate`)."""
        for calls in self._calls.values():
            calls.clear()
        self._inputs.clear()
        self._producer = None

    def before_module(self, name: str, args: tuple) -> None:
        """Before an input-reading module runs (the session calls it under ``torch.no_grad()``): keep the
        per-unit tail distance of x (the module may overwrite x in place)."""
        kind = self.kinds.get(name)
        if kind is not None and kind.reads_input and args and isinstance(args[0], torch.Tensor):
            x = args[0]
            axis = self._axes.get(name)
            if axis is None:
                axis = self._axes[name] = self._resolve(name, x)
            self._inputs[name] = nearest_tail(kind, x, sample_dims(x, axis))

    def after_module(self, name: str, args: tuple, output: object) -> None:
        """After a watched module ran (under ``torch.no_grad()``): an owner becomes the current producer; an
        activation is measured."""
        kind = self.kinds.get(name)
        if kind is None:
            self._producer = name
            return
        if not isinstance(output, torch.Tensor):
            raise ValueError(f"activation module {name!r} returned {type(output).__name__}, not a tensor")
        y = output
        axis = self._axes.get(name)
        if axis is None:
            axis = self._axes[name] = self._resolve(name, y)
        tail = self._inputs.pop(name, None) if kind.reads_input else None
        self._calls[name].append(call_stats(self._index[name], y, axis, kind, tail))

    def _resolve(self, name: str, y: torch.Tensor) -> int:
        if y.dim() < 2:
            raise ValueError(f"activation {name!r} has shape {tuple(y.shape)}: no sample axis and unit axis")
        producer = self._owners.get(self._producer) if self._producer is not None else None
        try:
            return feature_dim(name, tuple(y.shape), producer, self._declared.get(name))
        except ValueError as error:
            if name in self._declared:
                raise
            warnings.warn(
                f"gradlens ActivationStats: {error}. Its units are the entries of one sample (unit_axis 0); "
                f"declare ActivationStats(unit_axes={{{name!r}: ...}}) to count features or channels instead",
                stacklevel=2,
            )
            return 0

    # --- the firing ---------------------------------------------------------------------------------------

    def compute(self, ctx) -> dict[str, torch.Tensor]:
        calls = [call for made in self._calls.values() for call in made]
        for made in self._calls.values():
            made.clear()
        if not calls:
            raise RuntimeError(
                f"no training forward of the activation modules was seen before step {ctx.step}: the forward ran "
                "without grad, before attach(), or inside a graph compiled without gradlens's hooks "
                "(torch.compile before attach: attach first, or call torch.compiler.reset())"
            )
        key = Layout.key(calls)
        if self._layout is None or self._layout[0] != key:
            self._layout = (key, Layout.of(calls, list(self.kinds.values())))
        values = summarize(calls, list(self.kinds.values()), self._layout[1]).to(torch.float32)
        out = {quantity: values[:, i].contiguous() for i, quantity in enumerate(QUANTITIES)}
        out["unit_axis"] = torch.tensor([self._axes.get(label, -1) for label in self.kinds], dtype=torch.int8)
        return out


QUANTITIES = ("dead_fraction", "saturated_fraction", "mean", "std")
