"""GradStats' two routes to the local sums — the fused CPU kernel and the torch route — against brute force.

Brute force: every statistic from the gradient converted to float64 by torch, every histogram from
``numpy.histogram`` of the finite entries with the same float64 edges (below/above counted with ``<``/``>``).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gradlens.probes import grad_kernel
from gradlens.probes import grad_stats as gs
from gradlens.probes.grad_kernel import Histogram

UNIFORM = torch.linspace(-0.3, 0.3, 13, dtype=torch.float64)
UNEVEN = torch.tensor([-2.0, -0.05, -1e-3, 0.0, 0.01, 0.25, 3.0], dtype=torch.float64)


def _gradients() -> list[torch.Tensor | None]:
    generator = torch.Generator().manual_seed(0)

    def randn(*shape: int, scale: float = 0.1) -> torch.Tensor:
        return torch.randn(*shape, generator=generator) * scale

    on_edges = randn(500)
    on_edges[: UNIFORM.numel()] = UNIFORM.float()  # entries equal to (float32-rounded) edges
    on_edges[20:27] = UNEVEN.float()
    on_edges[30] = 0.3  # the last edge, rounded to float32 (a little above 0.3)
    broken = randn(70, 11)
    broken[3, 4], broken[5, 6], broken[7, 1] = math.nan, math.inf, -math.inf
    only_inf = randn(64)
    only_inf[9] = math.inf
    cancelling = torch.full((512,), 1e-9)
    cancelling[256:] = -1e-9
    cancelling[0] += 3e-16  # Σg ≈ 3e-16 where Σ|g| ≈ 5e-7: needs float64 accumulation
    return [
        torch.zeros(0),
        randn(()),
        *[randn(50) for _ in range(93)],  # stacked into packs by the torch route
        randn(300, 260),  # 78 000 entries: a pack of its own
        randn(40, 30).t(),  # not contiguous
        randn(7, 9).double(),
        randn(33, 5).bfloat16(),
        randn(61).half(),
        None,
        on_edges,
        broken,
        only_inf,
        cancelling,
        torch.zeros(10),
    ]


def _brute(g: torch.Tensor, edges: torch.Tensor) -> dict[str, object]:
    d = g.detach().double().reshape(-1)
    finite = d[torch.isfinite(d)]
    values = d.numpy()
    return {
        "mean": float(d.sum() / d.numel()) if d.numel() else math.nan,
        "mean_abs": float(d.abs().sum() / d.numel()) if d.numel() else math.nan,
        "norm": float(d.norm()),
        "max_abs": float(d.abs().max()) if d.numel() else 0.0,
        "nonfinite": float((~torch.isfinite(d)).sum()),
        "hist": np.histogram(finite.numpy(), bins=edges.numpy())[0].tolist(),
        "below": int((values < float(edges[0])).sum()),
        "above": int((values > float(edges[-1])).sum()),
    }


def _route(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if name == "torch":
        monkeypatch.setattr(grad_kernel, "library", lambda: None)
    elif grad_kernel.library() is None:
        pytest.skip("no C compiler here: the fused kernel is not built")


@pytest.mark.parametrize("edges", [UNIFORM, UNEVEN], ids=["uniform", "uneven"])
@pytest.mark.parametrize("route", ["kernel", "torch"])
def test_local_sums_then_finalize_match_brute_force(monkeypatch, route, edges):
    _route(route, monkeypatch)
    grads = _gradients()
    histogram = Histogram(edges)
    assert histogram.uniform == (edges is UNIFORM)
    sums, maxima, counts, _ = gs.local_sums(grads, histogram)
    stats = gs.finalize(sums, maxima)
    bins = edges.numel() - 1
    for row, g in enumerate(grads):
        got = {name: float(values[row]) for name, values in stats.items()}
        if g is None:
            assert all(math.isnan(got[k]) for k in ("mean", "mean_abs", "norm", "max_abs")), got
            assert got["nonfinite"] == -1 and sums[row, gs.PRESENT] == 0
            continue
        want = _brute(g, edges)
        where = f"row {row}, shape {tuple(g.shape)}, {g.dtype}"
        assert got["nonfinite"] == want["nonfinite"], where
        if math.isnan(want["mean"]):
            assert math.isnan(got["mean"]) and (g.numel() == 0 or math.isnan(got["max_abs"])), where
        else:
            assert got["mean"] == pytest.approx(want["mean"], rel=1e-12, abs=1e-15), where
            assert got["mean_abs"] == pytest.approx(want["mean_abs"], rel=1e-6), where
            assert got["norm"] == pytest.approx(want["norm"], rel=1e-6), where
            assert got["max_abs"] == want["max_abs"], where
        assert counts[row, 1 : bins + 1].tolist() == want["hist"], where
        assert (int(counts[row, 0]), int(counts[row, bins + 1])) == (want["below"], want["above"]), where


def test_the_routes_agree_with_each_other(monkeypatch):
    if grad_kernel.library() is None:
        pytest.skip("no C compiler here: the fused kernel is not built")
    grads = _gradients()
    histogram = Histogram(UNIFORM)
    kernel = gs.local_sums(grads, histogram, exponents=True)
    monkeypatch.setattr(grad_kernel, "library", lambda: None)
    plain = gs.local_sums(grads, histogram, exponents=True)
    # the NaN column counts NaN entries in the kernel, blocks holding a NaN in the torch route: > 0 alike
    nan = gs.NAN
    assert torch.equal(kernel[0][:, nan] > 0, plain[0][:, nan] > 0)
    columns = [c for c in range(grad_kernel.COLUMNS) if c != nan]
    torch.testing.assert_close(kernel[0][:, columns], plain[0][:, columns], rtol=1e-6, atol=1e-20, equal_nan=True)
    without_nan = kernel[0][:, nan] == 0  # max |g| is not used (max_abs is NaN) where a NaN was counted
    torch.testing.assert_close(kernel[1][without_nan], plain[1][without_nan], rtol=0, atol=0)
    assert torch.equal(kernel[2], plain[2]) and torch.equal(kernel[3], plain[3])


def test_kernel_threads_split_the_work_without_changing_a_bit():
    if grad_kernel.library() is None:
        pytest.skip("no C compiler here: the fused kernel is not built")
    generator = torch.Generator().manual_seed(2)
    grads = [torch.randn(n, generator=generator) for n in (400_000, 3, 700_000, 50_000, 1)]
    histogram = Histogram(UNIFORM)
    threads = torch.get_num_threads()
    results = []
    try:
        for count in (1, 2, 3):
            torch.set_num_threads(count)
            results.append(gs.local_sums(grads, histogram, exponents=True))
    finally:
        torch.set_num_threads(threads)
    for sums, maxima, counts, slots in results[1:]:
        assert torch.equal(sums, results[0][0]) and torch.equal(maxima, results[0][1])
        assert torch.equal(counts, results[0][2]) and torch.equal(slots, results[0][3])


def test_kernel_can_be_switched_off(monkeypatch):
    monkeypatch.setenv("GRADLENS_KERNEL", "0")
    assert grad_kernel._build() is None


def _with_gradients(grads: list[torch.Tensor | None]) -> list[torch.Tensor]:
    """A parameter per gradient (its shape and dtype), ``.grad`` set to it."""
    parameters = []
    for g in grads:
        parameter = torch.zeros((0,) if g is None else g.shape, requires_grad=True)
        if g is not None:
            parameter = parameter.to(g.dtype).detach().requires_grad_()
            parameter.grad = g
        parameters.append(parameter)
    return parameters


def _plain_gradients() -> list[torch.Tensor]:
    """Gradients the planned route takes: contiguous CPU float32/float64/bfloat16 tensors, some with NaN/Inf."""
    generator = torch.Generator().manual_seed(5)
    grads = [torch.randn(n, generator=generator) * 0.1 for n in (50, 1, 2500, 0, 300)]
    grads.append(torch.randn(7, 9, generator=generator).double())
    grads.append(torch.randn(33, 5, generator=generator).bfloat16())
    grads[4][7], grads[4][8] = math.nan, math.inf
    return grads


@pytest.mark.parametrize("edges, exponents", [(None, False), (UNIFORM, False), (None, True)],
                         ids=["stats", "stats+hist", "stats+exponents"])
def test_planned_statistics_equal_local_sums_then_finalize(edges, exponents):
    """The one-call route (a kept plan, fused finalize) gives bit for bit what the general route gives."""
    if grad_kernel.library() is None:
        pytest.skip("no C compiler here: the fused kernel is not built")
    grads = _plain_gradients()
    histogram = None if edges is None else Histogram(edges)
    cache: dict = {}
    parameters = _with_gradients(grads)
    for _ in range(3):  # the first call builds the plan, the later ones reuse it (read in C++ once it is loaded)
        values, sums, counts, slots = (gs.read_statistics(parameters, histogram, exponents, cache)
                                       or gs.planned_statistics(grads, histogram, exponents, cache))
        reference_sums, maxima, reference_counts, reference_slots = gs.local_sums(grads, histogram, exponents)
        reference = gs.finalize(reference_sums, maxima)
        for index, name in enumerate(gs.STATISTICS):
            torch.testing.assert_close(values[index], reference[name], rtol=0, atol=0, equal_nan=True)
        torch.testing.assert_close(sums, reference_sums, rtol=0, atol=0, equal_nan=True)
        assert (counts is None and reference_counts is None) or torch.equal(counts, reference_counts)
        assert (slots is None and reference_slots is None) or torch.equal(slots, reference_slots)
        for row, g in enumerate(grads):
            want = _brute(g, UNIFORM)
            if not math.isnan(want["mean"]):
                assert float(values[0, row]) == pytest.approx(want["mean"], rel=1e-12, abs=1e-15)
                assert float(values[2, row]) == pytest.approx(want["norm"], rel=1e-6)
    assert isinstance(cache["plan"], grad_kernel.Plan)


def test_a_plan_is_not_used_for_gradients_it_does_not_fit():
    """A changed dtype, size, layout, a missing gradient or a tensor subclass: never read through an old plan."""
    if grad_kernel.library() is None:
        pytest.skip("no C compiler here: the fused kernel is not built")
    grads = _plain_gradients()
    plan = grad_kernel.Plan.build(grads)
    assert plan.pointers(grads) is not None
    assert plan.pointers([g.clone() for g in grads]) is not None  # new tensors of the same kind: new addresses
    changed = {
        "dtype": lambda g: g.double() if g.dtype == torch.float32 else g.float(),
        "size": lambda g: torch.zeros(g.numel() + 1, dtype=g.dtype),
        "layout": lambda g: torch.zeros((g.numel(), 2), dtype=g.dtype).t()[0] if g.numel() > 1 else None,
        "missing": lambda g: None,
        "subclass": lambda g: torch.nn.Parameter(g.clone()),
        "negative view": lambda g: torch._neg_view(g.clone()),
    }
    for what, change in changed.items():
        other = list(grads)
        other[2] = change(grads[2])
        assert plan.pointers(other) is None, what
    assert plan.pointers(grads[:-1]) is None
    # GradStats then takes the general route, with a new plan only where one fits
    cache = {"plan": plan}
    other = list(grads)
    other[2] = grads[2].half()
    assert gs.read_statistics(_with_gradients(other), None, False, cache) is None
    assert gs.planned_statistics(other, None, False, cache) is None
    assert cache["plan"] is None


def test_a_session_whose_model_changes_dtype_records_exact_norms(tmp_path):
    """model.double() between steps: the kept plan no longer fits, and every record still equals brute force."""
    from gradlens.loader import load
    from gradlens.probes import GradStats
    from gradlens.session import attach

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(16, 6), torch.randint(0, 3, (16,))
    expected = []
    with attach(model, optimizer, tmp_path / "run.h5", probes=[GradStats()], every=1):
        for step in range(6):
            if step == 3:
                model.double()
            inputs = x.double() if step >= 3 else x
            optimizer.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(inputs), y).backward()
            expected.append([float(p.grad.double().norm()) for p in model.parameters()])
            optimizer.step()
    _, norms, _, _ = load(tmp_path / "run.h5").array("grad_stats", "norm")
    np.testing.assert_allclose(norms, expected, rtol=1e-6)
