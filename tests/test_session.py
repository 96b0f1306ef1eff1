"""Session: probes fire on optimizer.step, hooks are removed, observation leaves training unchanged."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import gradlens
from gradlens.probes import GradStats, Schedule, UpdateRatio


class Tiny(nn.Module):
    """Layers registered in an order different from their forward order."""

    def __init__(self) -> None:
        super().__init__()
        self.late = nn.Linear(6, 3)
        self.early = nn.Linear(4, 6)
        self.norm = nn.BatchNorm1d(6)
        self.drop = nn.Dropout(0.3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.late(self.drop(torch.relu(self.norm(self.early(x)))))


def _train(path, probes, steps: int = 12, **attach_kw) -> tuple[nn.Module, list[torch.Tensor]]:
    torch.manual_seed(0)
    model = Tiny()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    data = torch.Generator().manual_seed(1)
    grads = []
    session = gradlens.attach(model, optimizer, path, probes=probes, **attach_kw) if path else None
    for _ in range(steps):
        x = torch.randn(8, 4, generator=data)
        y = torch.randint(0, 3, (8,), generator=data)
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        grads.append([model.early.weight.grad.clone(), model.late.weight.grad.clone()])
        optimizer.step()
        if session:
            session.log(loss=1.0)
    if session:
        session.close()
    return model, grads


def test_probes_leave_training_bit_identical(tmp_path):
    bare, _ = _train(None, [])
    probed, _ = _train(tmp_path / "run.h5", [GradStats(bins=np.linspace(-1, 1, 9))])
    for (name, a), (_, b) in zip(bare.state_dict().items(), probed.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_gradstats_values_match_brute_force(tmp_path):
    edges = np.linspace(-0.5, 0.5, 11)
    _, grads = _train(tmp_path / "run.h5", [GradStats(bins=edges, params="weights")], steps=5)
    run = gradlens.load(tmp_path / "run.h5")
    assert list(run.layers["name"]) == ["early", "late"]  # forward order, not registration order
    frame = run.frame("grad_stats")
    for step, (g_early, g_late) in enumerate(grads):
        for layer, g in (("early", g_early), ("late", g_late)):
            g = g.double()
            got = frame[(frame.step == step) & (frame.layer == layer)].set_index("quantity")["value"]
            # GradStats stores its float64-accumulated statistics as float32 (schema 3): relative 6e-8
            assert got["mean"] == pytest.approx(float(g.mean()), rel=1e-7, abs=1e-15)
            assert got["mean_abs"] == pytest.approx(float(g.abs().mean()), rel=1e-6)
            assert got["norm"] == pytest.approx(float(g.norm()), rel=1e-6)
            assert got["max_abs"] == pytest.approx(float(g.abs().max()), rel=1e-6)
            assert got["nonfinite"] == 0
    steps, hist, _, _ = run.array("grad_stats", "hist")
    assert list(steps) == [0, 1, 2, 3, 4]
    expected = np.histogram(grads[3][1].numpy().ravel(), bins=edges)[0]
    np.testing.assert_array_equal(hist[3, 1], expected)


def test_every_and_listed_schedules(tmp_path):
    probes = [
        GradStats(name="every3", every=3),
        GradStats(name="listed", every=[1, 4, 11]),
        GradStats(name="dflt"),
    ]
    _train(tmp_path / "run.h5", probes, steps=12, every=5)
    run = gradlens.load(tmp_path / "run.h5")
    assert sorted(run.frame("every3").step.unique()) == [0, 3, 6, 9]
    assert sorted(run.frame("listed").step.unique()) == [1, 4, 11]
    assert sorted(run.frame("dflt").step.unique()) == [0, 5, 10]


def test_log_spaced_and_first_last_schedules():
    log = Schedule.log_spaced(per_decade=3)
    assert [s for s in range(120) if log(s)] == [0, 1, 3, 5, 10, 22, 47, 100]
    first_last = Schedule.first_last(50)
    assert [s for s in range(60) if first_last(s)] == [0, 49]
    with pytest.raises(ValueError, match="n >= 1"):
        Schedule.every(0)


def test_all_hooks_removed_and_nothing_kept_alive(tmp_path):
    torch.manual_seed(0)
    model = Tiny()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with gradlens.attach(model, optimizer, tmp_path / "run.h5", probes=[GradStats()]):
        model(torch.randn(4, 4)).sum().backward()
        optimizer.step()
    for module in model.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks and not module._backward_hooks
    assert not optimizer._optimizer_step_pre_hooks and not optimizer._optimizer_step_post_hooks


def test_nonfinite_gradients_are_recorded_not_raised(tmp_path):
    model = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    with gradlens.attach(model, optimizer, tmp_path / "run.h5", probes=[GradStats()]):
        model(torch.randn(2, 3)).sum().backward()
        model[0].weight.grad[0, 0] = float("nan")
        model[0].weight.grad[1, 2] = float("inf")
        optimizer.step()
    frame = gradlens.load(tmp_path / "run.h5").frame("grad_stats").set_index(["layer", "quantity"])["value"]
    assert frame[("0.weight", "nonfinite")] == 2
    assert np.isnan(frame[("0.weight", "mean")])
    assert frame[("0.bias", "nonfinite")] == 0
    assert frame[("1.weight", "nonfinite")] == 0


def test_unknown_parameter_module_is_an_error_naming_the_fix(tmp_path):
    class Scale(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gain = nn.Parameter(torch.ones(1))

        def forward(self, x):
            return x * self.gain

    model = nn.Sequential(nn.Linear(2, 2), Scale())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(TypeError, match=r"register_layer_type\(Scale"):
        gradlens.attach(model, optimizer, tmp_path / "run.h5", probes=[GradStats(params="weights")])


def test_explicit_layers_and_bad_names(tmp_path):
    model = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="'5' declared"):
        gradlens.attach(model, optimizer, tmp_path / "a.h5", probes=[GradStats()], layers=["5"])
    with gradlens.attach(model, optimizer, tmp_path / "b.h5", probes=[GradStats()], layers=["2"]):
        model(torch.randn(3, 2)).sum().backward()
        optimizer.step()
    assert list(gradlens.load(tmp_path / "b.h5").layers["name"]) == ["2"]


def test_step_before_any_forward_is_a_clear_error(tmp_path):
    model = nn.Sequential(nn.Linear(2, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with gradlens.attach(model, optimizer, tmp_path / "run.h5", probes=[GradStats()]):
        with pytest.raises(RuntimeError, match="first forward"):
            optimizer.step()


def test_probe_context_capture_restores_bn_and_rng(tmp_path):
    torch.manual_seed(0)
    model = Tiny().train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(8, 4)
    session = gradlens.attach(model, optimizer, tmp_path / "run.h5", layers=["early", "late"])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    captured = session.context.capture(x, inputs=["late"], outputs=["early", "early"], grad=True)
    assert captured.outputs["early"].requires_grad
    assert torch.equal(torch.get_rng_state(), rng)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    session.close()


class WithFrozen(nn.Module):
    """A registered layer, an unknown parameter-owning module (``gain``) and a frozen embedding."""

    def __init__(self) -> None:
        super().__init__()
        self.table = nn.Embedding(5, 3)
        self.table.weight.requires_grad_(False)
        self.fc = nn.Linear(3, 2)
        self.gain = nn.Parameter(torch.full((2,), 1.5))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.fc(self.table(tokens)) * self.gain


def test_gradstats_covers_every_trainable_parameter_by_name(tmp_path):
    torch.manual_seed(0)
    model = WithFrozen()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    tokens = torch.tensor([0, 3, 4, 1])
    with gradlens.attach(model, optimizer, tmp_path / "run.h5", probes=[GradStats()]):
        (model(tokens) ** 2).sum().backward()
        expected = {name: p.grad.double().clone() for name, p in model.named_parameters() if p.requires_grad}
        optimizer.step()
    run = gradlens.load(tmp_path / "run.h5")
    _, norms, _, labels = run.array("grad_stats", "norm")
    assert labels["layer"] == ["gain", "fc.weight", "fc.bias"]  # named_parameters() order, frozen table left out
    frame = run.frame("grad_stats").set_index(["layer", "quantity"])["value"]
    for name, g in expected.items():
        assert frame[(name, "norm")] == pytest.approx(float(g.norm()), rel=1e-6)
        # GradStats stores its float64-accumulated statistics as float32 (schema 3): relative 6e-8
        assert frame[(name, "mean")] == pytest.approx(float(g.mean()), rel=1e-7)
        assert frame[(name, "max_abs")] == pytest.approx(float(g.abs().max()), rel=1e-6)
    rows = {row["name"]: row for row in run.meta["parameters"]}
    assert rows["table.weight"] == {
        "name": "table.weight",
        "module": "table",
        "kind": "embedding",
        "shape": [5, 3],
        "numel": 15,
        "trainable": False,
        "in_optimizer": False,
    }
    assert rows["gain"]["module"] == "" and rows["gain"]["trainable"]
    assert rows["fc.weight"]["kind"] == "linear"


def test_gradstats_int_bins_fix_a_symmetric_range_at_the_first_firing(tmp_path):
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    grads = []
    with gradlens.attach(model, optimizer, tmp_path / "run.h5", probes=[GradStats(bins=4)]):
        for scale in (1.0, 10.0):
            optimizer.zero_grad()
            model(torch.randn(4, 3)).sum().mul(scale).backward()
            grads.append({name: p.grad.double().clone() for name, p in model.named_parameters()})
            optimizer.step()
    run = gradlens.load(tmp_path / "run.h5")
    largest = max(float(g.abs().max()) for g in grads[0].values())
    bound = gradlens.probes.grad_stats.round_up_one_digit(largest)
    assert largest <= bound < largest + 10 ** np.floor(np.log10(largest))
    _, edges, _, _ = run.array("grad_stats", "hist_edges")
    np.testing.assert_allclose(edges[0], np.linspace(-bound, bound, 5), rtol=0, atol=0)
    np.testing.assert_array_equal(edges[1], edges[0])  # fixed at the first firing
    _, hist, _, labels = run.array("grad_stats", "hist")
    _, below, _, _ = run.array("grad_stats", "hist_below")
    _, above, _, _ = run.array("grad_stats", "hist_above")
    for step in (0, 1):
        for row, name in enumerate(labels["layer"]):
            g = grads[step][name].numpy().ravel()
            np.testing.assert_array_equal(hist[step, row], np.histogram(g, bins=edges[0])[0])
            assert below[step, row] == int((g < -bound).sum())
            assert above[step, row] == int((g > bound).sum())
            assert hist[step, row].sum() + below[step, row] + above[step, row] == g.size
    assert below[0].sum() == above[0].sum() == 0
    assert below[1].sum() + above[1].sum() > 0  # ten times larger gradients leave the first range


def test_round_up_one_digit():
    from gradlens.probes.grad_stats import round_up_one_digit

    assert [round_up_one_digit(v) for v in (0.0347, 3.0, 0.12, 0.04, 9.5, 1e-7)] == pytest.approx(
        [0.04, 3.0, 0.2, 0.04, 10.0, 1e-7], rel=1e-12
    )


def test_gradstats_out_of_range_and_nonfinite_entries_are_counted_apart(tmp_path):
    model = nn.Linear(4, 1, bias=False)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    with gradlens.attach(model, optimizer, tmp_path / "run.h5", probes=[GradStats(bins=[-1.0, 0.0, 1.0])]):
        model(torch.ones(1, 4)).sum().backward()
        model.weight.grad.copy_(torch.tensor([[-2.0, float("-inf"), float("nan"), 1.0]]))
        optimizer.step()
    run = gradlens.load(tmp_path / "run.h5")
    assert run.array("grad_stats", "hist")[1][0].tolist() == [[0, 1]]  # 1.0 falls in the closed last bin
    assert run.array("grad_stats", "hist_below")[1][0].tolist() == [2]  # -2 and -Inf
    assert run.array("grad_stats", "hist_above")[1][0].tolist() == [0]  # NaN is in neither (nonfinite: 2)
    assert run.array("grad_stats", "nonfinite")[1][0].tolist() == [2.0]


def test_gradstats_int_bins_wait_for_a_nonzero_gradient(tmp_path):
    model = nn.Linear(2, 1, bias=False)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    with gradlens.attach(model, optimizer, tmp_path / "run.h5", probes=[GradStats(bins=2)]):
        model(torch.zeros(1, 2)).sum().backward()  # gradient exactly 0: no range to fix yet
        optimizer.step()
        optimizer.zero_grad()
        model(torch.tensor([[0.25, -0.05]])).sum().backward()  # max |g| 0.25 -> R = 0.3
        optimizer.step()
    run = gradlens.load(tmp_path / "run.h5")
    _, edges, _, _ = run.array("grad_stats", "hist_edges")
    assert np.isnan(edges[0]).all()
    np.testing.assert_allclose(edges[1], [-0.3, 0.0, 0.3], rtol=1e-15)
    assert run.array("grad_stats", "hist")[1].tolist() == [[[-1, -1]], [[1, 1]]]


def test_gradstats_rejects_bad_bins():
    with pytest.raises(ValueError, match="must be >= 1"):
        GradStats(bins=0)
    with pytest.raises(TypeError, match="an int"):
        GradStats(bins=2.5)
    with pytest.raises(ValueError, match="params must be one of"):
        GradStats(params="biases")


def test_update_ratio_equals_lr_times_gradient_norm_for_plain_sgd(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    lr = 0.05
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    data = torch.Generator().manual_seed(1)
    grads, weights = [], []
    with gradlens.attach(model, optimizer, tmp_path / "run.h5", probes=[UpdateRatio(every=[0, 2])]):
        for _ in range(3):
            x, y = torch.randn(6, 3, generator=data, dtype=torch.float64), torch.randint(0, 2, (6,), generator=data)
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
            weights.append({n: p.detach().clone() for n, p in model.named_parameters()})
            optimizer.step()
    run = gradlens.load(tmp_path / "run.h5")
    frame = run.frame("update_ratio").set_index(["step", "layer", "quantity"])["value"]
    assert sorted(frame.index.get_level_values("step").unique()) == [0, 2]
    assert run.array("update_ratio", "ratio")[3]["layer"] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    for step in (0, 2):
        for name, g in grads[step].items():
            # plain SGD: Δw = -lr·g, so ‖Δw‖ = lr·‖g‖ up to the rounding of w - lr·g (float64)
            assert frame[(step, name, "update_norm")] == pytest.approx(lr * float(g.norm()), rel=1e-12)
            assert frame[(step, name, "weight_norm")] == pytest.approx(float(weights[step][name].norm()), rel=1e-14)
            ratio = lr * float(g.norm()) / float(weights[step][name].norm())
            assert frame[(step, name, "ratio")] == pytest.approx(ratio, rel=1e-12)


def test_a_skipped_step_does_no_firing_work(tmp_path, monkeypatch):
    """At a step where no probe is due the step pre-hook returns at once: no firing, and a closure passes through
    unwrapped (issue 23.2: a skipped step costs the session its hooks' few attribute reads, ~1 µs)."""
    torch.manual_seed(0)
    model = Tiny()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    session = gradlens.attach(model, optimizer, tmp_path / "run.h5", probes=[GradStats(every=[0, 3])])
    fired, wrapped = [], []
    original_fire, original_wrap = session._fire, session._wrap_closure
    monkeypatch.setattr(session, "_fire", lambda: (fired.append(session.step), original_fire())[1])
    monkeypatch.setattr(session, "_wrap_closure", lambda c: (wrapped.append(session.step), original_wrap(c))[1])

    def closure():
        optimizer.zero_grad()
        loss = model(torch.randn(4, 4)).sum()
        loss.backward()
        return loss

    for _ in range(5):
        optimizer.step(closure)
    session.close()
    assert fired == [0, 3] and wrapped == [0, 3]
    assert sorted(gradlens.load(tmp_path / "run.h5").frame("grad_stats").step.unique()) == [0, 3]
