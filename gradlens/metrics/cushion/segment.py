"""A segment (layer i to layer j) as the map the interlayer cushion differentiates: which statistics its
BatchNorm layers normalise by (``bn_statistics``), the checks that it acts on each sample (no dropout or
running-statistics BN in train mode), its output tensor, and J x by one forward-mode JVP.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn

BN_STATISTICS = ("running", "batch", "sample")
#: Automatic-differentiation routes (argument ``autodiff``).
AUTODIFF = ("auto", "forward", "reverse")


def _check_segment(f: Callable[[Tensor], Tensor], bn_statistics: str = "running") -> None:
    """Reject modules in train mode that make f random (dropout) or, with running statistics, couple samples."""
    if not isinstance(f, nn.Module):
        if bn_statistics != "running":
            raise ValueError(
                f"bn_statistics={bn_statistics!r} needs the segment as an nn.Module (its BatchNorm layers are "
                f"switched to the statistics of the input); got {type(f).__name__}"
            )
        return
    coupling = (nn.modules.dropout._DropoutNd,)
    if bn_statistics == "running":
        coupling += (nn.modules.batchnorm._BatchNorm,)
    for name, module in f.named_modules():
        if module.training and isinstance(module, coupling):
            raise ValueError(
                f"{type(module).__name__} {name or '<segment>'!r} is in train mode: it couples samples or "
                f"draws random numbers; call .eval() on the segment before measuring its interlayer cushion "
                f"(BatchNorm normalising by its input: bn_statistics='batch' or 'sample')"
            )


@contextlib.contextmanager
def statistics_of_input(f: Callable[[Tensor], Tensor], bn_statistics: str) -> Iterator[None]:
    """Context manager: every BatchNorm of ``f`` normalises by the statistics of its own input.

    The running buffers are hidden (``running_mean = running_var = None``, ``track_running_stats = False``:
    ``F.batch_norm`` then uses the input's statistics in train and eval mode alike and updates nothing) and
    put back on exit, so they are neither read nor changed.

    Args:
        f: a module (other callables are left alone).
        bn_statistics: ``"batch"`` or ``"sample"`` switch the BatchNorm layers; ``"running"`` changes nothing.
    """
    if bn_statistics == "running" or not isinstance(f, nn.Module):
        yield
        return
    saved = [
        (m, m.running_mean, m.running_var, m.track_running_stats)
        for m in f.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
    ]
    try:
        for m, *_ in saved:
            m.running_mean, m.running_var, m.track_running_stats = None, None, False
        yield
    finally:
        for m, mean, var, track in saved:
            m.running_mean, m.running_var, m.track_running_stats = mean, var, track


def _as_tensor(out: object) -> Tensor:
    """A segment's output tensor: the output itself, or the first element of a tuple/list output."""
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], Tensor):
        return out[0]
    if not isinstance(out, Tensor):
        raise ValueError(
            f"segment returned {type(out).__name__}; it must return a tensor [B, *out] (or a tuple whose first "
            f"element is one); wrap it in a function that picks the output"
        )
    return out


def _segment_map(f: Callable[[Tensor], Tensor], bn_statistics: str) -> Callable[[Tensor], Tensor]:
    """The map of the batch that is differentiated: f itself, or f on each sample alone (``"sample"``)."""
    if bn_statistics == "sample":
        return lambda x: torch.cat([_as_tensor(f(x[b : b + 1])) for b in range(x.shape[0])])
    return lambda x: _as_tensor(f(x))


def _forward_ad_missing(error: Exception) -> bool:
    """True for the errors PyTorch raises when an operation has no forward-mode derivative."""
    text = str(error).lower()
    return isinstance(error, NotImplementedError) or any(
        key in text for key in ("forward ad", "forward-mode", "jvp", "forward mode")
    )


def _check_output(x: Tensor, y: Tensor) -> None:
    if y.dim() < 1 or y.shape[0] != x.shape[0]:
        raise ValueError(
            f"segment maps x {tuple(x.shape)} to {tuple(y.shape)}; it must keep the batch dim first and act "
            f"on each sample separately"
        )


def _segment_output(f: Callable[[Tensor], Tensor], x: Tensor) -> tuple[Tensor, Tensor]:
    """(f(x), J x) by one forward-mode pass with tangent x (J of the whole batch map)."""
    y, jx = torch.func.jvp(f, (x,), (x,))
    _check_output(x, y)
    return y, jx
