"""Where tensors become numpy: buffered records to host arrays in their stored dtypes, narrowing checked.

Probes leave their statistics on the gradient's device; the recorder keeps them (detached) until a flush,
where :func:`to_host` brings every quantity still on an accelerator to the host in one transfer per device and
:func:`stack` turns the rest into ``[N, *shape]`` arrays. :func:`narrow` casts to the stored dtype and says when
a value does not fit it (a float beyond float32's range, a count beyond int32's): such values are stored as the
nearest value the dtype holds (±Inf, the largest count), and the recorder writes a warning event.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

Value = torch.Tensor | np.ndarray | float | int


def tensor_to_numpy(tensor: torch.Tensor) -> np.ndarray:
    """A detached CPU copy of ``tensor`` as numpy (bfloat16, which numpy lacks, as float32)."""
    tensor = tensor.detach().cpu()
    if tensor.dtype == torch.bfloat16:
        tensor = tensor.to(torch.float32)
    return tensor.numpy()


def stack(rows: list[Value]) -> np.ndarray:
    """Buffered records of one quantity -> one ``[N, *shape]`` array (their own dtype)."""
    if all(isinstance(row, torch.Tensor) for row in rows) and len({(r.device, r.dtype) for r in rows}) == 1:
        return tensor_to_numpy(torch.stack(rows))
    return np.stack([tensor_to_numpy(r) if isinstance(r, torch.Tensor) else np.asarray(r) for r in rows])


def on_accelerator(tensor: Value) -> bool:
    """Whether a buffered value still lives on an accelerator (it must cross to the host at the flush)."""
    return isinstance(tensor, torch.Tensor) and tensor.device.type != "cpu"


def to_host(groups: Mapping[tuple[str, str], list[Value]]) -> dict[tuple[str, str], np.ndarray]:
    """The buffered rows of every quantity still on an accelerator, brought to the host in ONE transfer per device.

    Once per flush, every such quantity is stacked on its device, widened to float64 (exact for float32, bf16,
    fp16 and for counts below 2**53), concatenated into one flat tensor and copied with one non-blocking copy
    into pinned host memory, followed by one synchronisation; the flat copy is then split back. Quantities
    already on the CPU are not in the result (:func:`stack` reads them directly).
    """
    by_device: dict[torch.device, list[tuple[str, str]]] = {}
    for key, rows in groups.items():
        if rows and all(on_accelerator(row) for row in rows) and len({row.device for row in rows}) == 1:
            by_device.setdefault(rows[0].device, []).append(key)
    host: dict[tuple[str, str], np.ndarray] = {}
    for keys in by_device.values():
        stacked = [torch.stack([row.detach() for row in groups[key]]).to(torch.float64) for key in keys]
        flat = torch.cat([block.reshape(-1) for block in stacked])
        pinned = flat.device.type == "cuda"
        buffer = torch.empty(flat.shape, dtype=torch.float64, pin_memory=pinned)
        buffer.copy_(flat, non_blocking=pinned)
        if pinned:
            torch.cuda.current_stream(flat.device).synchronize()
        values = buffer.numpy()
        start = 0
        for key, block in zip(keys, stacked, strict=True):
            host[key] = values[start : start + block.numel()].reshape(tuple(block.shape))
            start += block.numel()
    return host


def narrow(values: np.ndarray, dtype: str | np.dtype) -> tuple[np.ndarray, str | None]:
    """``values`` in ``dtype``, and what did not fit (None when everything did).

    Integers outside the dtype's range (and NaN/±Inf bound for an integer dtype) are stored as its nearest
    bound (NaN as the smallest); finite floats beyond the range of a narrower float dtype become ±Inf.
    """
    dtype = np.dtype(dtype)
    values = np.asarray(values)
    if values.dtype == dtype:
        return values, None
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        if values.dtype.kind == "f":
            bad = ~np.isfinite(values) | (values < info.min) | (values > info.max)
            if bad.any():
                first = float(values[bad].flat[0])
                clipped = np.clip(np.nan_to_num(values, nan=info.min), info.min, info.max)
                return clipped.astype(dtype), f"{first:g} does not fit {dtype.name}; stored {dtype.name} bounds"
            return values.astype(dtype), None
        if values.size and (values.min() < info.min or values.max() > info.max):
            first = values[(values < info.min) | (values > info.max)].flat[0]
            clipped = np.clip(values, info.min, info.max).astype(dtype)
            return clipped, f"{int(first)} does not fit {dtype.name}; stored {dtype.name} bounds"
        return values.astype(dtype), None
    with np.errstate(over="ignore"):  # reported below, once per quantity, as an event
        cast = values.astype(dtype)
    if dtype.kind == "f" and values.dtype.kind == "f" and dtype.itemsize < values.dtype.itemsize:
        overflow = np.isinf(cast) & np.isfinite(values)
        if overflow.any():
            return cast, f"{float(values[overflow].flat[0]):g} is beyond {dtype.name}'s range; stored as ±inf"
    return cast, None
