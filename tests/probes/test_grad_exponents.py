"""GradStats' exponent histograms: hand-made gradients whose bucket counts are known, on every route (the fused
kernel's one-call plan, its batch call, the torch route on any device), and as recorded in a run file.

Brute force: the bucket of a value from ``math.frexp`` (|v| = f · 2^k with 0.5 <= f < 1, so floor(log2|v|) = k - 1)
of the value as a Python float, never from its bits.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import gradlens
from gradlens.probes import GradStats, grad_exponents, grad_flat, grad_kernel
from gradlens.probes import grad_stats as gs

SLOTS, ZERO, NONFINITE, MAGNITUDES = (grad_exponents.SLOTS, grad_exponents.ZERO, grad_exponents.NONFINITE,
                                      grad_exponents.MAGNITUDES)


def _bucket(value: float) -> int:
    """Brute force: the slot of one value, 82·(value > 0) + m, m = clamp(floor(log2|v|) + 65, 0, 81)."""
    if not math.isfinite(value):
        return NONFINITE
    if value == 0:
        return ZERO
    floor_log2 = math.frexp(abs(value))[1] - 1
    return min(max(floor_log2 + 65, 0), 81) + (MAGNITUDES if value > 0 else 0)


def _brute(g: torch.Tensor) -> list[int]:
    counts = [0] * SLOTS
    for value in g.detach().resolve_neg().double().reshape(-1).tolist():
        counts[_bucket(value)] += 1
    return counts


def _slot(sign: str, magnitude: int) -> int:
    return magnitude + (MAGNITUDES if sign == "+" else 0)


def _expected(pairs: dict[int, int]) -> list[int]:
    counts = [0] * SLOTS
    for slot, count in pairs.items():
        counts[slot] += count
    return counts


F32_TINY = float(np.nextafter(np.float32(2.0**-64), np.float32(0)))  # the float32 just below 2^-64
F32_BELOW_16 = float(np.nextafter(np.float32(2.0**16), np.float32(0)))  # just below 2^16


def _hand_made() -> list[tuple[torch.Tensor, list[int]]]:
    """Gradients and their slot counts, written out by hand from the bucket definition (not computed)."""
    f32 = torch.tensor(
        [2.0**-64, -(2.0**-64), F32_TINY, 2.0**-65, 1e-45, -1e-40, 2.0**15, F32_BELOW_16, 2.0**16, -3e38, -3.0,
         1.0, 0.75, 0.0, -0.0, math.nan, math.inf, -math.inf],
        dtype=torch.float32,
    )
    f32_counts = _expected({
        _slot("+", 1): 1, _slot("-", 1): 1,  # [2^-64, 2^-63)
        _slot("+", 0): 3, _slot("-", 0): 1,  # below 2^-64: just below, 2^-65, the subnormals 1e-45, -1e-40
        _slot("+", 80): 2,  # [2^15, 2^16): 2^15 and the float32 just below 2^16
        _slot("+", 81): 1, _slot("-", 81): 1,  # 2^16 and -3e38: from 2^16 on
        _slot("-", 66): 1,  # -3 in [2^1, 2^2)
        _slot("+", 65): 1, _slot("+", 64): 1,  # 1 in [2^0, 2^1), 0.75 in [2^-1, 2^0)
        ZERO: 2, NONFINITE: 3,
    })
    f64 = torch.tensor([2.0**-64, float(np.nextafter(2.0**-64, 0)), 1 - 2.0**-53, 5e-324, 1e300, -(2.0**-1000), -0.0],
                       dtype=torch.float64)
    f64_counts = _expected({_slot("+", 1): 1, _slot("+", 0): 2, _slot("+", 64): 1, _slot("+", 81): 1,
                            _slot("-", 0): 1, ZERO: 1})
    bf16 = torch.tensor([2.0**-64, 2.0**-130, -1.5, 3.3e38, -(2.0**-64) * 1.5, 0.0], dtype=torch.bfloat16)
    bf16_counts = _expected({_slot("+", 1): 1, _slot("+", 0): 1, _slot("-", 65): 1, _slot("+", 81): 1,
                             _slot("-", 1): 1, ZERO: 1})
    # float16's subnormals are normal float32 values: 2^-24 keeps its exponent (bucket [2^-24, 2^-23))
    f16 = torch.tensor([2.0**-24, -(2.0**-14), 65504.0, math.inf, 2.0**-10], dtype=torch.float16)
    f16_counts = _expected({_slot("+", 41): 1, _slot("-", 51): 1, _slot("+", 80): 1, NONFINITE: 1,
                            _slot("+", 55): 1})
    return [(f32, f32_counts), (f64, f64_counts), (bf16, bf16_counts), (f16, f16_counts)]


def test_the_hand_made_counts_agree_with_brute_force():
    for g, counts in _hand_made():
        assert _brute(g) == counts, g.dtype


def _routes(grads, monkeypatch) -> dict[str, torch.Tensor]:
    """The slot counts [R, SLOTS] of ``grads`` from every route available here."""
    out = {}
    if grad_kernel.library() is not None:
        out["kernel batch"] = gs.local_sums(grads, exponents=True)[3]
        plannable = [g for g in grads if g is None or g.dtype in grad_kernel.DTYPES]
        if len(plannable) == len(grads):
            out["kernel plan"] = gs.planned_statistics(grads, None, True, {})[3]
    with monkeypatch.context() as patch:
        patch.setattr(grad_kernel, "library", lambda: None)
        out["torch"] = gs.local_sums(grads, exponents=True, cache={})[3]
    return out


def test_every_route_counts_the_hand_made_gradients_exactly(monkeypatch):
    cases = _hand_made()
    grads = [g for g, _ in cases]
    expected = torch.tensor([counts for _, counts in cases])
    routes = _routes(grads, monkeypatch)
    assert "torch" in routes and len(routes) >= 2 or grad_kernel.library() is None
    for route, slots in routes.items():
        assert torch.equal(slots, expected), route
    plain = [g for g in grads if g.dtype != torch.float16]  # the one-call plan takes the kernel's dtypes
    if grad_kernel.library() is not None:
        assert torch.equal(gs.planned_statistics(plain, None, True, {})[3], expected[:3])


def _random_gradients() -> list[torch.Tensor | None]:
    """Gradients spanning 60 decades, sizes across block boundaries, layouts the kernel does not read as they are."""
    generator = torch.Generator().manual_seed(3)
    spread = torch.exp2(torch.randint(-80, 25, (5000,), generator=generator).double())
    spread *= torch.randn(5000, generator=generator, dtype=torch.float64).sign()
    spread[::97] = 0.0
    return [
        spread.float(),
        spread,
        spread.bfloat16(),
        torch.randn(1023, generator=generator),
        torch.randn(1025, generator=generator) * 1e-21,
        torch.randn(4096, generator=generator).half(),
        None,
        torch.zeros(0),
        torch.randn(()),
        torch.randn(30, 40, generator=generator).t(),  # strided
        torch._neg_view(torch.randn(300, generator=generator)),  # lazily negated: memory holds -g
    ]


def test_every_route_equals_brute_force_and_counts_every_entry(monkeypatch):
    grads = _random_gradients()
    for route, slots in _routes(grads, monkeypatch).items():
        for row, g in enumerate(grads):
            if g is None:
                assert slots[row].tolist() == [0] * SLOTS, route
                continue
            assert slots[row].tolist() == _brute(g), (route, row)
            assert int(slots[row].sum()) == g.numel(), (route, row)


def test_the_torch_route_gives_the_same_counts_whatever_its_windows(monkeypatch):
    """Windows of two blocks (sharing one buffer): every gradient in windows of its own or shared, the counts and
    sums unchanged, at every call."""
    grads = _random_gradients()
    monkeypatch.setattr(grad_kernel, "library", lambda: None)
    wide = gs.local_sums(grads, exponents=True, cache={})
    monkeypatch.setattr(grad_flat, "WINDOW", 2 * grad_flat.BLOCK)
    cache: dict = {}
    narrow = gs.local_sums(grads, exponents=True, cache=cache)
    assert len(cache["flat"].windows) > 5
    # one buffer for them all, filled in turn: the copy is bounded by the largest window, not the model
    assert len({window.blocks.untyped_storage().data_ptr() for window in cache["flat"].windows}) == 1
    narrow_again = gs.local_sums(grads, exponents=True, cache=cache)  # stale entries of other windows: zeroed
    assert torch.equal(narrow[3], narrow_again[3]) and torch.equal(narrow[0], narrow_again[0])
    assert torch.equal(wide[3], narrow[3])
    torch.testing.assert_close(wide[0], narrow[0], rtol=1e-12, atol=0, equal_nan=True)


def _unused_head_model() -> nn.Module:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Linear(5, 4)
            self.unused = nn.Linear(4, 2)  # never in the forward: its gradient is always None

        def forward(self, x):
            return self.body(x)

    torch.manual_seed(0)
    return Net()


def test_the_recorded_exponent_histograms_say_what_they_are(tmp_path):
    model = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(16, 6), torch.randint(0, 3, (16,))
    expected = []
    with gradlens.attach(model, optimizer, tmp_path / "run.h5", probes=[GradStats(exponents=True)], every=1):
        for _ in range(3):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            expected.append([_brute(p.grad) for p in model.parameters()])
            optimizer.step()
    run = gradlens.load(tmp_path / "run.h5")
    steps, hist, axes, labels = run.array("grad_stats", "exp_hist")
    assert axes == ("step", "layer", "sign", "exponent") and hist.dtype == np.uint32
    assert labels["sign"] == ["negative", "positive"] and len(labels["exponent"]) == 82
    assert labels["exponent"][:2] == ["(0, 2^-64)", "[2^-64, 2^-63)"] and labels["exponent"][-1] == "[2^16, inf)"
    assert labels["layer"] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    zero = run.array("grad_stats", "exp_zero")[1]
    nonfinite = run.array("grad_stats", "exp_nonfinite")[1]
    recorded = np.concatenate([hist.reshape(3, 4, -1), zero[..., None], nonfinite[..., None]], axis=-1)
    np.testing.assert_array_equal(recorded, expected)
    assert (recorded.sum(-1) == [[30, 5, 15, 3]] * 3).all()


def test_a_parameter_without_gradient_records_zero_counts_and_the_plan_is_built_once(tmp_path, monkeypatch):
    """An unused layer (gradient always None) fits the kernel's plan: one plan for the whole run, every record exact
    (its counts 0 and its nonfinite -1), through the one-call route at every firing."""
    if grad_kernel.library() is None:
        pytest.skip("no C compiler here: the fused kernel is not built")
    builds, routes = [], []
    original_init, original_local = grad_kernel.Plan.__init__, gs.local_sums
    monkeypatch.setattr(grad_kernel.Plan, "__init__",
                        lambda self, grads: builds.append(1) or original_init(self, grads))
    monkeypatch.setattr(gs, "local_sums", lambda *a, **k: routes.append("local") or original_local(*a, **k))
    model = _unused_head_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    expected = []
    with gradlens.attach(model, optimizer, tmp_path / "run.h5", probes=[GradStats(exponents=True)], every=1):
        for step in range(5):
            optimizer.zero_grad(set_to_none=True)
            model(torch.full((3, 5), float(step + 1))).square().sum().backward()
            expected.append(_brute(model.body.weight.grad))
            optimizer.step()
    assert builds == [1] and routes == []
    run = gradlens.load(tmp_path / "run.h5")
    hist = run.array("grad_stats", "exp_hist")[1]
    zero, nonfinite = run.array("grad_stats", "exp_zero")[1], run.array("grad_stats", "exp_nonfinite")[1]
    assert hist[:, 2:].sum() == 0 and zero[:, 2:].sum() == 0 and nonfinite[:, 2:].sum() == 0
    np.testing.assert_array_equal(np.concatenate([hist[:, 0].reshape(5, -1), zero[:, :1], nonfinite[:, :1]], 1),
                                  expected)
    assert (run.array("grad_stats", "nonfinite")[1][:, 2:] == -1).all()


def test_a_gradient_that_never_fits_the_plan_is_not_planned_again_at_every_firing(tmp_path, monkeypatch):
    """A float16 gradient (the kernel reads float16 only after a conversion): the first firing finds the misfit,
    the later ones check that one gradient only, and no plan is built."""
    if grad_kernel.library() is None:
        pytest.skip("no C compiler here: the fused kernel is not built")
    searches, builds = [], []
    original_misfit, original_init = grad_kernel.Plan.misfit, grad_kernel.Plan.__init__
    monkeypatch.setattr(grad_kernel.Plan, "misfit", staticmethod(lambda grads: searches.append(1)
                                                                  or original_misfit(grads)))
    monkeypatch.setattr(grad_kernel.Plan, "__init__",
                        lambda self, grads: builds.append(1) or original_init(self, grads))
    model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2).half())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    expected = []
    with gradlens.attach(model, optimizer, tmp_path / "run.h5", probes=[GradStats(exponents=True)], every=1):
        for _ in range(5):
            optimizer.zero_grad(set_to_none=True)
            model[1](model[0](torch.randn(2, 4)).half()).float().sum().backward()
            expected.append([float(p.grad.double().norm()) for p in model.parameters()])
            optimizer.step()
    assert searches == [1] and builds == []
    # GradStats stores its float64-accumulated statistics as float32 (schema 3): relative 6e-8
    np.testing.assert_allclose(gradlens.load(tmp_path / "run.h5").array("grad_stats", "norm")[1], expected,
                               rtol=1e-7)


def test_the_counts_are_stored_as_uint32_and_exponents_must_be_a_bool():
    with pytest.raises(TypeError, match="exponents must be True or False"):
        GradStats(exponents="yes")


def test_the_torch_route_calls_nothing_that_deterministic_cuda_refuses(monkeypatch):
    """torch.use_deterministic_algorithms(True) raises on CUDA for histc, bincount with weights, put_ and a floating
    cumsum: at a firing, the torch route (statistics, linear bins, exponents) calls none of them."""
    from torch.overrides import TorchFunctionMode

    class Names(TorchFunctionMode):
        def __init__(self) -> None:
            super().__init__()
            self.names: set[str] = set()

        def __torch_function__(self, func, types, args=(), kwargs=None):
            self.names.add(getattr(func, "__name__", str(func)))
            return func(*args, **(kwargs or {}))

    monkeypatch.setattr(grad_kernel, "library", lambda: None)
    histogram = grad_kernel.Histogram(torch.linspace(-1, 1, 9, dtype=torch.float64))
    grads, cache = _random_gradients(), {}
    gs.local_sums(grads, histogram, exponents=True, cache=cache)  # the first call builds the layout (on the CPU)
    with Names() as mode:
        gs.local_sums(grads, histogram, exponents=True, cache=cache)
    assert "scatter_add_" in mode.names and "_foreach_copy_" in mode.names  # the mode saw the route's calls
    assert not mode.names & {"histc", "bincount", "put_", "cumsum", "index_put_"}
