"""bf16 autocast: GradStats records the float32 parameters' gradients exactly as ``p.grad`` holds them.

Under ``torch.autocast("cpu", dtype=torch.bfloat16)`` the matmuls run in bfloat16 but the parameters and
their ``.grad`` stay float32; the recorded statistics equal those of ``p.grad`` (float64 reference, rel 1e-6
for the float32 norms and sums, exact for max |g|), and observing leaves training bit-identical.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import gradlens
from gradlens.probes import GradStats

STEPS = 3


def _train(path=None):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.LayerNorm(16), nn.GELU(), nn.Linear(16, 4))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    data = torch.Generator().manual_seed(4)
    session = gradlens.attach(model, optimizer, path, probes=[GradStats(bins=8)]) if path else None
    grads = []
    for _ in range(STEPS):
        x, y = torch.randn(12, 8, generator=data), torch.randint(0, 4, (12,), generator=data)
        optimizer.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x)
            loss = nn.functional.cross_entropy(out, y)
        assert out.dtype == torch.bfloat16
        loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
        optimizer.step()
    if session:
        session.close()
    return model, grads


def test_bf16_autocast_gradients_equal_p_grad_statistics(tmp_path):
    bare, _ = _train()
    model, grads = _train(tmp_path / "run.h5")
    for (name, a), (_, b) in zip(bare.state_dict().items(), model.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    run = gradlens.load(tmp_path / "run.h5")
    frame = run.frame("grad_stats").set_index(["step", "layer", "quantity"])["value"]
    _, hist, _, labels = run.array("grad_stats", "hist")
    _, edges, _, _ = run.array("grad_stats", "hist_edges")
    for step, by_name in enumerate(grads):
        for row, (name, g) in enumerate(by_name.items()):
            assert g.dtype == torch.float32
            assert labels["layer"][row] == name
            g64 = g.double()
            assert frame[(step, name, "norm")] == pytest.approx(float(g64.norm()), rel=1e-6)
            assert frame[(step, name, "mean")] == pytest.approx(float(g64.mean()), rel=1e-12, abs=1e-18)
            assert frame[(step, name, "mean_abs")] == pytest.approx(float(g64.abs().mean()), rel=1e-6)
            assert frame[(step, name, "max_abs")] == float(g64.abs().max())
            counts = torch.histogram(g64.flatten(), bins=torch.as_tensor(edges[0])).hist
            assert hist[step, row].tolist() == counts.long().tolist()
