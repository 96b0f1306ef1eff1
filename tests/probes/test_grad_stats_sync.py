"""GradStats never synchronises the host with the device at a step without a flush (issue 15.9).

On a GPU, reading a value (``.item()``, ``bool(t)``, ``float(t)``, ``.tolist()``, ``.cpu()``), a host-side
copy to the device (``torch.tensor(..., device=...)``) and a few ops whose output size depends on the data
(``nonzero``, ``bincount``, boolean masks, ``unique``, ``repeat_interleave``) make the host wait for every queued
kernel. The test double is a ``TorchFunctionMode`` that counts those calls while ``optimizer.step()`` runs (where
the session fires GradStats and hands its record to the recorder). It runs on CPU, through both routes: the
torch route with ``_host_side`` patched to answer as it would for a GPU tensor, and the fused CPU kernel.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

import gradlens
from gradlens.probes import GradStats, grad_flat, grad_kernel

READS = {"item", "__bool__", "__float__", "__int__", "__index__", "tolist", "cpu", "numpy", "__array__"}
DATA_DEPENDENT = {"nonzero", "argwhere", "bincount", "masked_select", "unique", "repeat_interleave"}


class SyncCounter(TorchFunctionMode):
    """Counts calls that would synchronise a GPU with the host, by name."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", str(func))
        if name in READS or name in DATA_DEPENDENT:
            self.calls.append(name)
        elif name in ("tensor", "as_tensor") and kwargs.get("device") is not None:
            self.calls.append(f"{name}(device=...)")  # a copy from host memory to the device
        elif name == "to" and any(isinstance(a, str | torch.device) for a in (*args[1:], kwargs.get("device"))):
            self.calls.append("to(device)")
        elif name in ("__getitem__", "__setitem__") and _has_bool_tensor(args[1:2]):
            self.calls.append(f"{name}[mask]")
        return func(*args, **kwargs)


def _has_bool_tensor(values) -> bool:
    for value in values:
        if isinstance(value, tuple):
            if _has_bool_tensor(value):
                return True
        elif isinstance(value, torch.Tensor) and value.dtype == torch.bool:
            return True
    return False


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 300), nn.BatchNorm1d(300), nn.ReLU(), nn.Linear(300, 260), nn.Linear(260, 3))


@pytest.mark.parametrize("route", ["torch route as on a GPU", "fused CPU kernel"])
@pytest.mark.parametrize("bins, exponents", [(None, False), (16, False), ([-0.3, -0.01, 0.0, 0.02, 0.5], False),
                                             (None, True)], ids=["stats", "bins=16", "edges", "exponents"])
def test_no_host_sync_at_steps_without_a_flush(tmp_path, monkeypatch, route, bins, exponents):
    if route == "fused CPU kernel":
        if grad_kernel.library() is None:
            pytest.skip("no C compiler here: the fused kernel is not built")
    else:
        monkeypatch.setattr(grad_kernel, "library", lambda: None)
        monkeypatch.setattr(grad_flat, "_host_side", lambda device: False)
    model = _model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    generator = torch.Generator().manual_seed(1)
    path = tmp_path / "run.h5"
    per_step = []
    probe = GradStats(bins=bins, exponents=exponents)
    with gradlens.attach(model, optimizer, path, probes=[probe], flush_every=10**6, flush_seconds=1e9):
        for step in range(6):
            x, y = torch.randn(32, 6, generator=generator), torch.randint(0, 3, (32,), generator=generator)
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            if step == 5:  # the last step: the NaN never reaches the weights
                model[3].weight.grad[0, :4] = torch.tensor([float("nan"), float("inf"), -float("inf"), 1.0])
            with SyncCounter() as counter:
                optimizer.step()
            per_step.append(counter.calls)
    # step 0 sets up the session (and, with bins=K, reads the range once); every later step: nothing
    assert per_step[1:] == [[]] * 5, per_step
    run = gradlens.load(path)
    frame = run.frame("grad_stats").set_index(["step", "layer", "quantity"])["value"]
    assert frame[(5, "3.weight", "nonfinite")] == 3 and frame[(4, "3.weight", "nonfinite")] == 0
    assert sorted(run.frame("grad_stats").step.unique()) == list(range(6))


def test_the_flush_reads_the_buffered_records_back(tmp_path):
    """The device-to-host transfers happen at the flush: one per recorded quantity (not one per record)."""
    model = _model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    with gradlens.attach(model, optimizer, tmp_path / "run.h5", probes=[GradStats(bins=8)], flush_every=4) as session:
        transfers = []
        for _ in range(4):
            optimizer.zero_grad()
            model(torch.randn(16, 6)).sum().backward()
            with SyncCounter() as counter:
                optimizer.step()
            transfers.append([c for c in counter.calls if c in ("cpu", "to(device)")])
        declared = len(session.recorder._quantities["grad_stats"])
    assert transfers[1:3] == [[], []]
    assert 1 <= len(transfers[3]) <= declared  # the 4th record triggers the flush
