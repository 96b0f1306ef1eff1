"""The probe extension point: ``Schedule``, ``Quantity`` and the ``Probe`` base class.

A probe is a small class with a ``name``, a ``schedule`` (step -> bool), a declaration of what it needs
(``needs``), a declaration of what it records (``quantities``) and a ``compute`` that returns detached
tensors. Probes never register hooks, never touch numpy and never draw from the global RNG: the
session (``gradlens.session``) installs and removes hooks, and the recorder turns tensors into numpy. What a
probe reads when it fires, ``ProbeContext``, lives in ``gradlens.probes.context``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import torch

from gradlens.schema import Quantity  # noqa: F401  (defined with the file format; re-exported)

if TYPE_CHECKING:
    from torch import nn

    from gradlens.probes.context import ProbeContext
    from gradlens.spec import ModelSpec

# What a probe may need from the session.
GRADS = "grads"  # parameter gradients, read at each optimizer.step() before the update
PROBE_BATCH = "probe_batch"  # a fixed batch (x, y), the same samples at every record
# module inputs/outputs on the step's first training forward, through hooks the session installs on due steps
# (the probe implements watched_modules, begin_capture, before_module, after_module)
ACTIVATIONS = "activations"


class Schedule:
    """When a probe fires: a predicate over the optimizer step counter (0-based).

    Build with the class methods and combine with ``|``::

        Schedule.every(10) | Schedule.at([0, 5]) | Schedule.log_spaced(per_decade=4)
    """

    def __init__(self, predicate: Callable[[int], bool], description: str) -> None:
        self._predicate = predicate
        self.description = description

    def __call__(self, step: int) -> bool:
        return bool(self._predicate(step))

    def __or__(self, other: Schedule) -> Schedule:
        return Schedule(lambda s: self(s) or other(s), f"{self.description} | {other.description}")

    def __repr__(self) -> str:
        return f"Schedule({self.description})"

    @classmethod
    def every(cls, n: int, start: int = 0) -> Schedule:
        """Steps start, start + n, start + 2n, ..."""
        if int(n) < 1:
            raise ValueError(f"Schedule.every needs n >= 1, got {n!r}")
        return cls(lambda s: s >= start and (s - start) % n == 0, f"every {n} from {start}")

    @classmethod
    def at(cls, steps: Iterable[int]) -> Schedule:
        """Exactly the listed steps."""
        chosen = frozenset(int(s) for s in steps)
        return cls(chosen.__contains__, f"at {sorted(chosen)}")

    @classmethod
    def log_spaced(cls, per_decade: int = 4, first: int = 0) -> Schedule:
        """Step ``first``, then the first step at or after each point of a log10 grid.

        With ``per_decade=4``: 0, 1, 2, 4, 6, 10, 18, 32, 57, 100, ...
        """
        if int(per_decade) < 1:
            raise ValueError(f"Schedule.log_spaced needs per_decade >= 1, got {per_decade!r}")

        def fires(step: int) -> bool:
            if step < first:
                return False
            if step == first:
                return True
            k = step - first
            # fire when k is the first integer at or after a grid point 10**(j/per_decade): the largest
            # grid point <= k is j = floor(log10(k)·per_decade), and k fires when it rounds up to k
            j = math.floor(math.log10(k) * per_decade + 1e-9)
            return k == math.ceil(10 ** (j / per_decade) - 1e-9)

        return cls(fires, f"log-spaced {per_decade}/decade")

    @classmethod
    def first_last(cls, total_steps: int) -> Schedule:
        """The first step and the last step of a run of ``total_steps`` optimizer steps."""
        return cls.at([0, int(total_steps) - 1])


def as_schedule(when: int | Iterable[int] | Schedule) -> Schedule:
    """``every=N`` → ``Schedule.every(N)``; a list of steps → ``Schedule.at``; a Schedule is kept."""
    if isinstance(when, Schedule):
        return when
    if isinstance(when, int):
        return Schedule.every(when)
    return Schedule.at(when)


class Probe(ABC):
    """Base class of every probe.

    Subclasses set ``name`` and ``needs`` and implement ``quantities`` and ``compute``; they may override
    ``validate`` to check their configuration against the model at ``attach()``, before any file is touched.

    Attributes:
        name: the HDF5 group name; unique within a session.
        needs: what the probe reads (``GRADS``, ``PROBE_BATCH``, ``ACTIVATIONS``).
        uses_layers: whether the probe reads ``ctx.layers`` (the session's weight layers). Probes that cover
            every parameter set it False; the session then discovers layers leniently (a module type it does
            not know is left out of the layer table instead of being an error).
        measures_update: a probe that measures the optimizer's update (e.g. ``UpdateRatio``): the session
            calls :meth:`before_step` before ``optimizer.step()`` and records :meth:`after_step` after it,
            instead of recording :meth:`compute` before the step.
        fresh_values: :meth:`compute` returns tensors that nothing else holds or changes later (e.g. GradStats'
            new statistics tensors); the recorder then keeps them as they are instead of copying each one.
    """

    name: str = ""
    needs: frozenset[str] = frozenset()
    uses_layers: bool = True
    measures_update: bool = False
    fresh_values: bool = False

    def __init__(self, every: int | Iterable[int] | Schedule | None = None) -> None:
        # None: the session's default schedule (``attach(..., every=N)``) applies.
        self.schedule = None if every is None else as_schedule(every)

    def validate(self, model: nn.Module, spec: ModelSpec | None) -> None:
        """Check the probe's configuration against ``model`` and ``spec``; raise ``ValueError`` naming the fix.

        Called by :func:`gradlens.attach` before any file is touched (``spec`` is None when the layers are
        discovered on the first forward). Unknown module names, a spec that does not fit the model, ... belong
        here, so a mistake is reported at once instead of as a probe failure during training. Default: no-op.
        """
        return None

    @abstractmethod
    def quantities(self, ctx: ProbeContext) -> dict[str, Quantity]:
        """What one firing records: quantity name -> ``Quantity`` (called once, when layers are known)."""

    @abstractmethod
    def compute(self, ctx: ProbeContext) -> dict[str, torch.Tensor]:
        """Compute one record: quantity name -> detached tensor of the declared shape."""

    def meta(self) -> dict:
        """What the probe says about its records in its ``meta["probes"]`` entry (JSON); called at attach,
        after :meth:`validate`. Default: nothing."""
        return {}

    def before_step(self, ctx: ProbeContext) -> None:
        """``measures_update`` probes: keep what :meth:`after_step` needs (weights before the update)."""
        return None

    def after_step(self, ctx: ProbeContext) -> dict[str, torch.Tensor]:
        """``measures_update`` probes: the record, computed after ``optimizer.step()``; default ``compute``."""
        return self.compute(ctx)

    def __repr__(self) -> str:
        when = "session default" if self.schedule is None else self.schedule.description
        return f"{type(self).__name__}(schedule={when})"


#: What a parameter probe covers: every trainable parameter, or the session's layer weights only.
COVERAGE = ("all", "weights")


def check_coverage(probe: str, params: str) -> str:
    """``params`` if it is one of :data:`COVERAGE`; else a ValueError naming the value and the choices."""
    if params not in COVERAGE:
        raise ValueError(f"{probe} params must be one of {COVERAGE}, got {params!r}")
    return params


def covered_parameters(ctx: ProbeContext, params: str) -> list[tuple[str, torch.Tensor]]:
    """(label, parameter) of every row a parameter probe records.

    ``params="all"``: every trainable parameter, labelled by its qualified name without wrapper prefixes;
    ``params="weights"``: the weight of each layer of the session, labelled by the layer's module name.
    """
    if params == "weights":
        return [(layer.name, layer.weight) for layer in ctx.layers]
    return [(p.name, p.parameter) for p in ctx.parameters if p.trainable]
