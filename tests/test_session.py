"""Session: probes fire on optimizer.step, hooks are removed, observation leaves training unchanged."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import gradlens
from gradlens.probes import GradStats, Schedule


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
    _, grads = _train(tmp_path / "run.h5", [GradStats(bins=edges)], steps=5)
    run = gradlens.load(tmp_path / "run.h5")
    assert list(run.layers["name"]) == ["early", "late"]  # forward order, not registration order
    frame = run.frame("grad_stats")
    for step, (g_early, g_late) in enumerate(grads):
        for layer, g in (("early", g_early), ("late", g_late)):
            g = g.double()
            got = frame[(frame.step == step) & (frame.layer == layer)].set_index("quantity")["value"]
            assert got["mean"] == pytest.approx(float(g.mean()), rel=1e-12, abs=1e-15)
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
    assert not optimizer._optimizer_step_pre_hooks


def test_nonfinite_gradients_are_recorded_not_raised(tmp_path):
    model = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    with gradlens.attach(model, optimizer, tmp_path / "run.h5", probes=[GradStats()]):
        model(torch.randn(2, 3)).sum().backward()
        model[0].weight.grad[0, 0] = float("nan")
        model[0].weight.grad[1, 2] = float("inf")
        optimizer.step()
    frame = gradlens.load(tmp_path / "run.h5").frame("grad_stats").set_index(["layer", "quantity"])["value"]
    assert frame[("0", "nonfinite")] == 2
    assert np.isnan(frame[("0", "mean")])
    assert frame[("1", "nonfinite")] == 0


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
        gradlens.attach(model, optimizer, tmp_path / "run.h5", probes=[GradStats()])


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
