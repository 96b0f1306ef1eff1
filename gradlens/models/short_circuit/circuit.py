"""One short circuit (document 000, eq. 13): :class:`ShortCircuit` names its front and rear modules, its weight
``w`` and its mode; :func:`select_fronts` is Algorithm 1's rule ``mod(l, k) == 0 and l < sc`` for choosing the
fronts of a rear.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

MODES = ("weight_only", "propagate")


@dataclass(frozen=True)
class ShortCircuit:
    """One short circuit: the rear module's output sensitivity is added to the front layer's (eq. 13).

    Args:
        front: dotted name of the front layer (``nn.Linear`` or ``nn.Conv{1,2,3}d``) whose gradient changes.
        rear: dotted name of the rear module whose output sensitivity ``δ_sc`` is short-circuited.
        weight: the SC weight ``w`` (document 000, section 5.4: default 0.2).
        mode: ``"weight_only"`` (Algorithm 1) or ``"propagate"``; see :mod:`gradlens.models.short_circuit`.
    """

    front: str
    rear: str
    weight: float = 0.2
    mode: str = "weight_only"

    def __post_init__(self) -> None:
        if self.front == self.rear:
            raise ValueError(f"short circuit front and rear are the same module {self.front!r}; use two layers")
        if self.mode not in MODES:
            raise ValueError(f"short circuit mode {self.mode!r} is unknown; use one of {MODES}")
        if not math.isfinite(self.weight):
            raise ValueError(f"short circuit weight must be finite, got {self.weight!r}")


def select_fronts(candidates: Sequence[str], rear: str, k: int) -> list[str]:
    """Front layers of the rear layer by Algorithm 1's rule ``mod(l, k) == 0 and l < sc``.

    ``l`` and ``sc`` are 1-based positions in ``candidates`` (the layers of the stretch the short
    circuits may span, in forward order); ``sc`` is the position of ``rear``.

    Example: ``select_fronts(["c1", ..., "c6"], "c6", 2) == ["c2", "c4"]``.

    Raises:
        ValueError: ``k < 1`` or ``rear`` not among the candidates.
    """
    if k < 1:
        raise ValueError(f"skip gap k must be >= 1, got {k}")
    if rear not in candidates:
        raise ValueError(f"rear layer {rear!r} is not among the candidate layers {list(candidates)}")
    sc = list(candidates).index(rear) + 1
    return [name for l, name in enumerate(candidates, start=1) if l % k == 0 and l < sc]
