"""Activation statistics: dead and saturated units, mean and std of an activation's output, per call of a
module and pooled over calls (pure functions: tensors in, tensors out; the probe is
:class:`gradlens.probes.ActivationStats`).

For a module output y ``[B, ...]`` with units U along a unit axis (all other axes index samples; unit axis 0:
each entry of a sample is a unit, axis 0 the samples):

- dead fraction = |{u ∈ U : y_u = 0 for every sample}| / |U|;
- saturated fraction = |{u ∈ U : every sample of u in a flat tail of the function, u not dead}| / |U|;
- mean = Σ y / N, std = sqrt(Σ y² / N - mean²) over the N entries (population std).

One call costs a few reductions over y and keeps per-unit vectors only (:func:`call_stats`): the per-unit sum
(0 exactly when a non-negative unit is dead), or max |y| for signed outputs; the per-unit smallest tail
distance; Σy and ‖y‖. :func:`summarize` pools the calls of one firing per label with a fixed number of tensor
operations (:class:`Layout`).

**Flat tails** (the exact test per kind; thresholds chosen so that |f'| <= 0.02 there, i.e. a gradient through
the unit shrinks at least 50-fold):

==============  =================================  ==================================================
kind            flat tail (test on the output y,   why
                or on the input x where y cannot
                tell)
==============  =================================  ==================================================
relu            none besides y = 0 (dead)          slope 0 exactly where y = 0
leaky_relu,     none                               slope a > 0 everywhere: it cannot saturate
prelu
relu6,          y <= min_val or y >= max_val       slope 0 exactly outside (min_val, max_val)
hardtanh
hardsigmoid     y = 0 or y = 1                     slope 0 exactly for |x| >= 3
hardswish       none besides y = 0 (dead)          slope 0 exactly where y = 0 (x <= -3)
tanh            |y| > 0.99                         f' = 1 - y² < 0.0199
sigmoid         y < 0.01 or y > 0.99               f' = y (1 - y) < 0.0099
softsign        |y| > 0.8586                       f' = (1 - |y|)² < 0.02
softplus        y < 0.0202 / β                     f' = 1 - exp(-β y) < 0.02
elu, celu       y < -0.98 α                        f' = e^(x/α) = 1 + y/α < 0.02 for x < 0
selu            y < 0.02 - λα (λα = 1.7581)        f' = λα e^x = y + λα for x < 0
gelu            x < -3 (input)                     |f'| <= 0.0119 for x <= -3; y is ≈ 0 on both sides of
                                                   its minimum, so only x tells the tail apart
silu, mish      x < -6 (input)                     |f'| <= 0.0124 for x <= -6; as for gelu
==============  =================================  ==================================================
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

Distance = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class ActivationKind:
    """How one activation function is measured.

    An entry t (the output y, or the input x with ``reads_input``) is in the flat tail when ``t < below`` (a
    one-sided lower tail) or ``distance(t) > bound`` (``<=``/``>=`` with ``inclusive``). A unit is in the tail
    for every sample when its largest t is below ``below``, or its smallest distance passes ``bound``: one
    reduction per call.

    Attributes:
        name: the kind stored in the metadata (``"relu"``, ``"tanh"``, ...).
        below: the lower tail ``t < below`` (None: not one-sided).
        distance: entries -> how far into a two-sided tail they are (None: none).
        bound: the two-sided tail starts beyond this distance.
        inclusive: the tail includes its edge (a hard edge such as ReLU6's y = 6).
        reads_input: the tail is read off the module's input x instead of its output y.
        nonnegative: the output is never negative, so "zero for every sample" is "per-unit sum is 0".
        definition: the test in words, stored in the metadata.
    """

    name: str
    below: float | None = None
    distance: Distance | None = None
    bound: float = 0.0
    inclusive: bool = False
    reads_input: bool = False
    nonnegative: bool = False
    definition: str = "no flat tail besides y = 0 (dead)"

    @property
    def has_tail(self) -> bool:
        """Whether the kind has a flat tail besides y = 0."""
        return self.below is not None or self.distance is not None


def _hardtanh(module: nn.Module) -> ActivationKind:
    low, high = float(module.min_val), float(module.max_val)
    middle, half = (low + high) / 2, (high - low) / 2
    name = "relu6" if isinstance(module, nn.ReLU6) else "hardtanh"
    return ActivationKind(
        name,
        distance=lambda y: (y - middle).abs(),
        bound=half,
        inclusive=True,
        nonnegative=low >= 0,
        definition=f"y <= {low:g} or y >= {high:g}",
    )


def _softplus(module: nn.Module) -> ActivationKind:
    below = -math.log(0.98) / float(module.beta)  # f' = 1 - exp(-beta y) < 0.02
    return ActivationKind("softplus", below, nonnegative=True, definition=f"y < {below:.4g} (0.0202 / beta)")


def _elu(module: nn.Module) -> ActivationKind:
    below = -0.98 * float(module.alpha)  # f' = 1 + y / alpha < 0.02 for x < 0
    return ActivationKind(type(module).__name__.lower(), below, definition=f"y < {below:.4g} (-0.98 alpha)")


SELU_SCALE = 1.0507009873554804934193349852946 * 1.6732632423543772848170429916717  # λα
NO_TAIL = "no flat tail (slope > 0 everywhere)"


def _fixed(kind: ActivationKind) -> Callable[[nn.Module], ActivationKind]:
    return lambda module: kind


def _distance_to_half(y: torch.Tensor) -> torch.Tensor:
    return (y - 0.5).abs()


#: Module type -> its handler (called with the module: some tails depend on its settings). Subclasses before
#: their bases (``nn.ReLU6`` is an ``nn.Hardtanh``).
ACTIVATION_KINDS: dict[type[nn.Module], Callable[[nn.Module], ActivationKind]] = {
    nn.ReLU: _fixed(ActivationKind("relu", nonnegative=True)),
    nn.ReLU6: _hardtanh,
    nn.Hardtanh: _hardtanh,
    nn.LeakyReLU: _fixed(ActivationKind("leaky_relu", definition=NO_TAIL)),
    nn.PReLU: _fixed(ActivationKind("prelu", definition=NO_TAIL)),
    nn.Hardswish: _fixed(ActivationKind("hardswish")),  # flat only where y = 0 (x <= -3): dead, not saturated
    nn.Hardsigmoid: _fixed(
        ActivationKind(
            "hardsigmoid",
            distance=_distance_to_half,
            bound=0.5,
            inclusive=True,
            nonnegative=True,
            definition="y = 0 or 1",
        )
    ),
    nn.Tanh: _fixed(ActivationKind("tanh", distance=torch.abs, bound=0.99, definition="|y| > 0.99")),
    nn.Sigmoid: _fixed(
        ActivationKind(
            "sigmoid", distance=_distance_to_half, bound=0.49, nonnegative=True, definition="y < 0.01 or > 0.99"
        )
    ),
    nn.Softsign: _fixed(ActivationKind("softsign", distance=torch.abs, bound=0.8586, definition="|y| > 0.8586")),
    nn.Softplus: _softplus,
    nn.ELU: _elu,
    nn.CELU: _elu,
    nn.SELU: _fixed(ActivationKind("selu", 0.02 - SELU_SCALE, definition="y < 0.02 - 1.7581")),
    nn.GELU: _fixed(ActivationKind("gelu", -3.0, reads_input=True, definition="input x < -3")),
    nn.SiLU: _fixed(ActivationKind("silu", -6.0, reads_input=True, definition="input x < -6")),
    nn.Mish: _fixed(ActivationKind("mish", -6.0, reads_input=True, definition="input x < -6")),
}


def register_activation(module_type: type[nn.Module], handler: Callable[[nn.Module], ActivationKind]) -> None:
    """Measure modules of ``module_type`` with ``handler(module) -> ActivationKind`` (its flat-tail test)."""
    ACTIVATION_KINDS[module_type] = handler


def activation_kind(module: nn.Module) -> ActivationKind | None:
    """The handler's :class:`ActivationKind` for ``module``, None for a type that is not in the mapping."""
    for module_type, handler in ACTIVATION_KINDS.items():
        if isinstance(module, module_type):
            return handler(module)
    return None


def in_tail(kind: ActivationKind, entries: torch.Tensor) -> torch.Tensor:
    """Boolean mask of the ``entries`` in the kind's flat tail, entry by entry (all False without one)."""
    if kind.below is not None:
        return entries <= kind.below if kind.inclusive else entries < kind.below
    if kind.distance is not None:
        distance = kind.distance(entries)
        return distance >= kind.bound if kind.inclusive else distance > kind.bound
    return torch.zeros_like(entries, dtype=torch.bool)


def nearest_tail(kind: ActivationKind, entries: torch.Tensor, samples: tuple[int, ...]) -> torch.Tensor | None:
    """Per unit, how far its least-deep sample is into the tail: the unit is in the tail for every sample when
    this passes :func:`tail_bound` (``-max t`` for a lower tail, ``min distance(t)`` for a two-sided one); None
    for a kind without a flat tail."""
    if kind.below is not None:
        return entries.amax(dim=samples).neg_()
    if kind.distance is not None:
        return kind.distance(entries).amin(dim=samples)
    return None


def tail_bound(kind: ActivationKind) -> float:
    """The strict float64 bound that :func:`nearest_tail`'s value passes (``>``) for a unit in the tail.

    An inclusive edge ``d >= b`` becomes ``d > b⁻`` with b⁻ the largest float64 below b: the same test for every
    float32 or float64 d."""
    bound = -kind.below if kind.below is not None else kind.bound
    return math.nextafter(bound, -math.inf) if kind.inclusive else bound


@dataclass
class CallStats:
    """One call's per-unit reductions and sums, kept as tensors (no host synchronisation) until the firing.

    Attributes:
        label: index of the module among the probe's labels.
        alive: per unit (1-D), a value that is 0 exactly when the unit is 0 for every sample: the per-unit sum
            for a non-negative output (then Σ alive = Σ y), else the largest |y|.
        tail: per unit, :func:`nearest_tail` of the call, or None.
        entries: the number of entries of y.
        total: Σ y over the entries, or None when it is Σ alive; norm: sqrt(Σ y²) (float32 reductions).
    """

    label: int
    alive: torch.Tensor
    tail: torch.Tensor | None
    entries: int
    total: torch.Tensor | None
    norm: torch.Tensor


def sample_dims(y: torch.Tensor, unit_axis: int) -> tuple[int, ...]:
    """The axes of ``y`` that index samples: all but ``unit_axis``, or only axis 0 when each entry of a sample
    is a unit (``unit_axis`` 0)."""
    return (0,) if unit_axis == 0 else tuple(d for d in range(y.dim()) if d != unit_axis)


def _flat(values: torch.Tensor) -> torch.Tensor:
    return values if values.dim() == 1 else values.reshape(-1)


def call_stats(
    label: int, y: torch.Tensor, unit_axis: int, kind: ActivationKind, tail: torch.Tensor | None
) -> CallStats:
    """The reductions of one call of a module whose output is ``y`` (``[B, ...]``; call it without grad): two
    passes over y for a ReLU (per-unit sums, ‖y‖), up to five for a kind with a two-sided tail; everything else
    waits for :func:`summarize`, and no per-sample value is kept.

    ``tail``: with ``kind.reads_input``, :func:`nearest_tail` of the input, taken before the module ran;
    otherwise computed here from y.
    """
    samples = sample_dims(y, unit_axis)
    values = y if y.dtype in (torch.float32, torch.float64) else y.float()
    if kind.nonnegative:  # a sum of non-negative numbers is 0 only when each is
        alive, total = values.sum(dim=samples), None
    else:
        alive = torch.maximum(values.amax(dim=samples), values.amin(dim=samples).neg_())
        total = values.sum()
    if not kind.reads_input:
        tail = nearest_tail(kind, values, samples)
    norm = torch.linalg.vector_norm(values)
    return CallStats(label, _flat(alive), None if tail is None else _flat(tail), y.numel(), total, norm)


@dataclass(frozen=True)
class Layout:
    """Where each call's per-unit values sit once concatenated, as index tensors: built once per structure of a
    firing (which labels were called, how many units each call had) and reused while it repeats, so a firing
    costs a fixed number of tensor operations however many modules it measured."""

    count: int  # labels
    per_unit: torch.Tensor  # label of each unit of cat(alive)
    units: torch.Tensor  # [L] units per label (float64)
    entries: torch.Tensor  # [L] entries per label (float64)
    call_labels: torch.Tensor  # label of each call
    summed: torch.Tensor  # per unit of cat(alive): 1.0 where the call's Σy is the sum of its per-unit sums
    totals: tuple[int, ...]  # calls whose Σy was taken apart (signed outputs)
    tailed: tuple[int, ...]  # calls with a tail value
    tail_units: torch.Tensor  # position in cat(alive) of each unit of cat(tail)
    tail_labels: torch.Tensor  # label of each unit of cat(tail)
    bounds: torch.Tensor  # float64 tail bound of each unit of cat(tail)

    @staticmethod
    def key(calls: list[CallStats]) -> tuple:
        """What the layout depends on."""
        return tuple((c.label, c.alive.numel(), c.tail is not None, c.total is None, c.entries) for c in calls)

    @classmethod
    def of(cls, calls: list[CallStats], kinds: list[ActivationKind]) -> Layout:
        device = calls[0].alive.device
        sizes = [c.alive.numel() for c in calls]
        starts = [sum(sizes[:i]) for i in range(len(sizes))]
        labels = [c.label for c in calls]
        count = len(kinds)

        def per_label(values: list[float]) -> torch.Tensor:
            out = torch.zeros(count, dtype=torch.float64)
            return out.index_add_(0, torch.tensor(labels), torch.tensor(values, dtype=torch.float64)).to(device)

        tailed = tuple(i for i, c in enumerate(calls) if c.tail is not None)
        positions = [starts[i] + u for i in tailed for u in range(sizes[i])]
        return cls(
            count=count,
            per_unit=torch.tensor(
                [c.label for c, n in zip(calls, sizes, strict=True) for _ in range(n)], device=device
            ),
            units=per_label([float(n) for n in sizes]),
            entries=per_label([float(c.entries) for c in calls]),
            call_labels=torch.tensor(labels, device=device),
            summed=torch.tensor(
                [float(c.total is None) for c, n in zip(calls, sizes, strict=True) for _ in range(n)],
                dtype=torch.float64,
                device=device,
            ),
            totals=tuple(i for i, c in enumerate(calls) if c.total is not None),
            tailed=tailed,
            tail_units=torch.tensor(positions, dtype=torch.int64, device=device),
            tail_labels=torch.tensor([labels[i] for i in tailed for _ in range(sizes[i])], device=device),
            bounds=torch.tensor(
                [tail_bound(kinds[labels[i]]) for i in tailed for _ in range(sizes[i])],
                dtype=torch.float64,
                device=device,
            ),
        )


def summarize(calls: list[CallStats], kinds: list[ActivationKind], layout: Layout | None = None) -> torch.Tensor:
    """``[L, 4]`` float64: dead fraction, saturated fraction, mean, std per label, from every call of one firing
    (NaN for a label without a call). ``layout``: :meth:`Layout.of` these calls, when kept from an earlier firing.

    Units and entries of a label's calls are pooled: fractions = Σ counts / Σ units; mean = Σ_i Σy_i / N;
    std = sqrt(Σ_i Σy²_i / N - mean²) in float64 (its relative error is about 1e-7·(1 + mean²/std²), from the
    float32 sums). A unit is dead when its ``alive`` value is 0, saturated when its tail value passes
    :func:`tail_bound` and it is not dead.
    """
    layout = layout or Layout.of(calls, kinds)
    alive = torch.cat([c.alive for c in calls]).double()

    def per_label(index: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        return torch.zeros(layout.count, dtype=torch.float64, device=alive.device).index_add_(0, index, values)

    dead = per_label(layout.per_unit, (alive == 0).double())
    saturated = torch.zeros_like(dead)
    if layout.tailed:
        passed = torch.cat([calls[i].tail for i in layout.tailed]).double() > layout.bounds
        living = alive.index_select(0, layout.tail_units) != 0
        saturated = per_label(layout.tail_labels, (passed & living).double())
    totals = per_label(layout.per_unit, alive * layout.summed)  # non-negative outputs: Σy = Σ per-unit sums
    if layout.totals:
        signed = torch.stack([calls[i].total for i in layout.totals]).double()
        totals = totals.index_add_(
            0, layout.call_labels.index_select(0, torch.tensor(layout.totals, device=alive.device)), signed
        )
    mean = totals / layout.entries
    second = per_label(layout.call_labels, torch.stack([c.norm for c in calls]).double().square()) / layout.entries
    std = (second - mean**2).clamp_(min=0).sqrt()
    # labels without a call: 0/0 = NaN in every column
    return torch.stack([dead / layout.units, saturated / layout.units, mean, std], dim=1)
