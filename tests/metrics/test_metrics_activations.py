"""gradlens.metrics.activations: the flat tails and the one-pass reductions of the activation statistics.

Every registered kind: its tail keeps |f'| <= 0.02 (autograd on a dense grid), and the per-unit reductions give
exactly the dead and saturated counts of the entry-by-entry definitions; moments against float64.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gradlens.metrics.activations import (
    ACTIVATION_KINDS,
    activation_kind,
    call_stats,
    in_tail,
    nearest_tail,
    summarize,
)


def test_flat_tail_thresholds_bound_the_slope():
    """Every tail test keeps |f'| <= 0.02 where it says 'saturated' (checked on a dense grid with autograd)."""
    grid = torch.linspace(-40, 40, 400001, dtype=torch.float64, requires_grad=True)
    for module in (
        nn.Tanh(),
        nn.Sigmoid(),
        nn.GELU(),
        nn.SiLU(),
        nn.Mish(),
        nn.ELU(),
        nn.CELU(2.0),
        nn.SELU(),
        nn.Softplus(beta=2.0),
        nn.Softsign(),
        nn.Hardtanh(),
        nn.ReLU6(),
        nn.Hardsigmoid(),
    ):
        kind = activation_kind(module)
        y = module(grid)
        (slope,) = torch.autograd.grad(y.sum(), grid)
        tail = in_tail(kind, grid.detach() if kind.reads_input else y.detach())
        assert tail.any(), kind.name
        assert slope[tail].abs().max() <= 0.02, kind.name


@pytest.mark.parametrize("module_type", list(ACTIVATION_KINDS), ids=lambda t: t.__name__)
def test_the_one_pass_reductions_equal_the_entry_by_entry_definition(module_type):
    """For every registered kind: dead and saturated fractions from the per-unit reductions equal the unit-by-unit
    count of the entry-wise tests (zero everywhere; in_tail for every sample), on inputs whose units sit in the
    tails, at the edges, dead, or mixed."""
    module = module_type()
    kind = activation_kind(module)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(32, 40, generator=generator) * 4
    x[:, :8] -= 60.0  # deep in the lower tail (and dead for ReLU-like kinds)
    x[:, 8:16] += 60.0  # upper tail
    x[:16, 16:20] -= 60.0  # half the samples each way
    x[16:, 16:20] += 60.0
    x[:, 20:24] = 0.0
    with torch.no_grad():
        y = module(x.clone())
        tail = nearest_tail(kind, x, (0,)) if kind.reads_input else None
        stats = summarize([call_stats(0, y, 1, kind, tail)], [kind])[0]
    entries = x if kind.reads_input else y
    dead = (y == 0).all(dim=0)
    saturated = in_tail(kind, entries).all(dim=0) & ~dead
    assert float(stats[0]) == float(dead.double().mean())
    assert float(stats[1]) == float(saturated.double().mean())
    assert float(stats[2]) == pytest.approx(float(y.double().mean()), rel=1e-5, abs=1e-6)
    assert float(stats[3]) == pytest.approx(float(y.double().std(correction=0)), rel=1e-5)
