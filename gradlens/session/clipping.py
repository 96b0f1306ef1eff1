"""What the optimizer really saw: gradient-norm clipping observed while a session is attached.

``torch.nn.utils.clip_grad_norm_(parameters, max_norm)`` computes the total norm of the gradients (the value it
returns) and then scales every gradient by ``min(max_norm / (total_norm + 1e-6), 1)``. A run whose gradients
are cut at every step looks, in the recorded (post-clip) gradient norms, exactly like a run with small
gradients; the pre-clip norm and the threshold tell them apart.

How the calls are seen: every ``clip_grad_norm_`` call in torch 2.x computes the total norm and then scales
the gradients through the module global ``torch.nn.utils.clip_grad._clip_grads_with_norm_(parameters,
max_norm, total_norm, foreach)``, published as ``torch.nn.utils.clip_grads_with_norm_``. While at least one
session is attached, :class:`ClipWatch` replaces both names by one wrapper that calls the original and then
hands ``total_norm`` (the very tensor ``clip_grad_norm_`` returns) and ``max_norm`` to every attached session
whose parameters include all the clipped ones. Because the wrapper sits *inside* ``clip_grad_norm_``, every way
of calling it is seen: ``torch.nn.utils.clip_grad_norm_``, a name imported before ``attach`` (``from
torch.nn.utils import clip_grad_norm_``), the deprecated ``clip_grad_norm``, and the two frameworks (verified
in their sources): Lightning's ``Precision.clip_grad_by_norm`` calls ``torch.nn.utils.clip_grad_norm_``;
the Hugging Face Trainer calls accelerate's ``Accelerator.clip_grad_norm_``, which computes the norm with
``torch.nn.utils.get_total_norm`` and clips with ``torch.nn.utils.clip_grads_with_norm_`` looked up at the call.
Not seen: ``clip_grads_with_norm_`` imported by name before ``attach`` and called with a norm computed
elsewhere, FSDP1's own ``FullyShardedDataParallel.clip_grad_norm_`` (FSDP1 is refused anyway) and
``clip_grad_value_`` (clipping by value has no threshold on the norm). A call with ``max_norm=inf`` (a way to
measure the norm) is recorded like any other: its threshold says it clipped nothing.

What ``clip_grad_norm_`` returns is untouched (the wrapper is below it and returns what the original returns).
Calls on parameters that are not all the session's (a GAN's discriminator, another model) pass through
unrecorded. The wrapper adds no host synchronisation: the norm tensor is kept as it is and converted with the
other pending norms in one transfer when the session drains them (:meth:`ClipRecord.drain`). The last session
to close restores the original global, whatever order sessions close in.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import ClassVar, Protocol

import torch
from torch.nn import utils as utils_module
from torch.nn.utils import clip_grad as clip_module

#: The module global every ``clip_grad_norm_`` call goes through (torch 2.6 and later) ...
INNER = "_clip_grads_with_norm_"
#: ... and its public name, which accelerate looks up at each call.
PUBLIC = "clip_grads_with_norm_"
#: Scalar names of one clipping call.
PRECLIP = "clip/preclip_norm"
MAX_NORM = "clip/max_norm"


class ClipListener(Protocol):
    """What :class:`ClipWatch` calls: a session's :class:`ClipRecord`."""

    def owns(self, parameters: list[torch.Tensor]) -> bool: ...

    def clipped(self, total_norm: torch.Tensor, max_norm: float) -> None: ...


class ClipWatch:
    """One wrapper on ``torch.nn.utils.clip_grad._clip_grads_with_norm_`` (and its public name
    ``torch.nn.utils.clip_grads_with_norm_``) shared by every attached session.

    Installed when the first listener registers, removed when the last one leaves (in any order). If something
    else replaced a name after gradlens did, the original cannot be put back there without dropping that
    replacement: the wrapper then stays inside it with no listener, a pure pass-through.
    """

    listeners: ClassVar[list[ClipListener]] = []
    original: ClassVar[Callable | None] = None
    wrapper: ClassVar[Callable | None] = None

    @classmethod
    def register(cls, listener: ClipListener) -> None:
        """Start telling ``listener`` about clipping calls (installs the wrapper for the first listener)."""
        if not hasattr(clip_module, INNER):
            raise RuntimeError(
                f"torch {torch.__version__} has no torch.nn.utils.clip_grad.{INNER}; gradlens cannot observe "
                "gradient clipping with this torch version"
            )
        if cls.wrapper is None:
            cls._install()
        cls.listeners.append(listener)

    @classmethod
    def unregister(cls, listener: ClipListener) -> None:
        """Stop telling ``listener``; the last listener to leave restores the original function."""
        cls.listeners = [other for other in cls.listeners if other is not listener]
        if not cls.listeners and cls.wrapper is not None:
            for module, name in ((clip_module, INNER), (utils_module, PUBLIC)):
                if getattr(module, name, None) is cls.wrapper:
                    setattr(module, name, cls.original)
            cls.wrapper = cls.original = None

    @classmethod
    def _install(cls) -> None:
        original = getattr(clip_module, INNER)

        @functools.wraps(original)
        def clip_grads_with_norm_(
            parameters: torch.Tensor | Iterable[torch.Tensor],
            max_norm: float,
            total_norm: torch.Tensor,
            foreach: bool | None = None,
        ) -> None:
            result = original(parameters, max_norm, total_norm, foreach)
            if cls.listeners:
                clipped = [parameters] if isinstance(parameters, torch.Tensor) else list(parameters)
                for listener in list(cls.listeners):
                    if listener.owns(clipped):
                        listener.clipped(total_norm, float(max_norm))
            return result

        cls.original, cls.wrapper = original, clip_grads_with_norm_
        setattr(clip_module, INNER, clip_grads_with_norm_)
        if getattr(utils_module, PUBLIC, None) is original:
            setattr(utils_module, PUBLIC, clip_grads_with_norm_)


class ClipRecord:
    """One session's clipping calls: kept as tensors, drained into scalars ``clip/preclip_norm`` and
    ``clip/max_norm`` at the step each call preceded (one pair of rows per call).

    Args:
        parameters: the session's parameters (a call is the session's when every clipped tensor is one of them).
        step: returns the session's current step (the optimizer step the clipped gradients feed).
    """

    def __init__(self, parameters: Iterable[torch.Tensor], step: Callable[[], int]) -> None:
        self._ids = frozenset(id(p) for p in parameters)
        self._step = step
        self.pending: list[tuple[int, torch.Tensor, float]] = []
        self.calls = 0

    def owns(self, parameters: list[torch.Tensor]) -> bool:
        """Whether every clipped tensor is one of this session's parameters (and there is one)."""
        return bool(parameters) and all(id(p) in self._ids for p in parameters)

    def clipped(self, total_norm: torch.Tensor, max_norm: float) -> None:
        """Keep one call's pre-clip norm (the tensor ``clip_grad_norm_`` returns) and its threshold."""
        norm = total_norm.detach()
        if hasattr(norm, "full_tensor"):  # a DTensor norm (FSDP2): every rank clips, so every rank gathers
            norm = norm.full_tensor()
        self.pending.append((self._step(), norm, max_norm))
        self.calls += 1

    def drain(self) -> list[tuple[int, float, float]]:
        """The pending calls as ``(step, preclip_norm, max_norm)``, in call order, converted in one transfer."""
        if not self.pending:
            return []
        pending, self.pending = self.pending, []
        device = pending[0][1].device
        norms = torch.stack([norm.reshape(()).to(device, torch.float64) for _, norm, _ in pending]).tolist()
        return [(step, norm, max_norm) for (step, _, max_norm), norm in zip(pending, norms, strict=True)]
