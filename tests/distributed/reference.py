"""Brute-force references for the distributed and framework tests: GradStats values computed by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

STATS = ("mean", "mean_abs", "norm", "max_abs", "nonfinite")


def grad_stats_by_hand(named_grads: dict[str, torch.Tensor]) -> dict[str, dict[str, float]]:
    """{parameter: {statistic: value}} in float64 from full gradients (NaN-free)."""
    out = {}
    for name, grad in named_grads.items():
        g = grad.detach().double().reshape(-1)
        out[name] = {
            "mean": g.mean().item(),
            "mean_abs": g.abs().mean().item(),
            "norm": g.norm().item(),
            "max_abs": g.abs().max().item(),
            "nonfinite": float((~torch.isfinite(g)).sum()),
        }
    return out


def recorded(frame: pd.DataFrame) -> dict[int, dict[str, dict[str, float]]]:
    """{step: {parameter: {statistic: value}}} from ``Run.frame("grad_stats")``."""
    out: dict[int, dict[str, dict[str, float]]] = {}
    for row in frame.itertuples(index=False):
        out.setdefault(int(row.step), {}).setdefault(row.layer, {})[row.quantity] = float(row.value)
    return out


def assert_stats_close(
    got: dict[str, dict[str, float]],
    expected: dict[str, dict[str, float]],
    rtol: float,
    where: str = "",
    atol: float = 0.0,
) -> None:
    """Every statistic of every parameter within ``rtol`` (relative; nonfinite exactly).

    The signed mean may cancel to almost nothing (|mean| ≪ mean|g|), where a relative comparison would measure
    rounding noise: it is compared within ``rtol · mean|g|``. ``atol`` covers gradients that are zero in exact
    arithmetic (BERT's attention key bias) and hold float32 rounding noise only.
    """
    assert sorted(got) == sorted(expected), f"{where}: parameters {sorted(got)} != {sorted(expected)}"
    for name, stats in expected.items():
        for stat in STATS:
            a, b = got[name][stat], stats[stat]
            if stat == "nonfinite":
                assert a == b, f"{where} {name} {stat}: {a} != {b}"
            elif stat == "mean":
                assert abs(a - b) <= rtol * stats["mean_abs"] + atol, (
                    f"{where} {name} mean: {a!r} != {b!r} (rtol {rtol})"
                )
            else:
                assert np.isclose(a, b, rtol=rtol, atol=atol), f"{where} {name} {stat}: {a!r} != {b!r} (rtol {rtol})"
