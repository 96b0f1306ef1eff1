"""ActivationStats (issue 21.2): dead and saturated units, mean and std of activation outputs on the training batch.

Every value is checked against a brute-force reference computed in float64 from the module outputs themselves
(captured by the test's own hooks), unit by unit with Python loops; the probe must not change training.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import gradlens
from gradlens.probes import ActivationStats, GradStats

TAILS = {  # the flat-tail tests of the docstring, written out again for the reference
    "relu": None,
    "tanh": lambda y, x: abs(y) > 0.99,
    "sigmoid": lambda y, x: y < 0.01 or y > 0.99,
    "gelu": lambda y, x: x < -3.0,
    "silu": lambda y, x: x < -6.0,
    "relu6": lambda y, x: y <= 0.0 or y >= 6.0,
}


class Mixed(nn.Module):
    """Linear → ReLU, Linear → Tanh, Linear → Sigmoid, Linear → GELU, Linear → SiLU(inplace), with biases and
    gains that drive some units dead or into their tails."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.relu = nn.Linear(5, 12), nn.ReLU()
        self.fc2, self.tanh = nn.Linear(12, 10), nn.Tanh()
        self.fc3, self.sigmoid = nn.Linear(10, 9), nn.Sigmoid()
        self.fc4, self.gelu = nn.Linear(9, 8), nn.GELU()
        self.fc5, self.silu = nn.Linear(8, 8), nn.SiLU(inplace=True)
        self.fc6, self.relu6 = nn.Linear(8, 6), nn.ReLU6()
        self.head = nn.Linear(6, 3)
        with torch.no_grad():
            self.fc1.bias[:5] = -50.0  # five ReLU units dead on any batch
            self.fc2.bias[:4] = torch.tensor([10.0, -10.0, 10.0, -10.0])  # tanh units pushed to ±1
            self.fc3.bias[:3] = torch.tensor([-12.0, 12.0, -12.0])  # sigmoid units stuck near 0 or 1
            self.fc4.bias[:4] = -5.0  # GELU tail (at -20 GELU underflows to exactly 0: dead)
            self.fc5.bias[:3] = -30.0  # SiLU tail
            self.fc6.bias[:2] = torch.tensor([-40.0, 40.0])  # ReLU6: one unit at 0 (dead), one at 6 (saturated)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.fc1(x))
        x = self.tanh(self.fc2(x))
        x = self.sigmoid(self.fc3(x))
        x = self.gelu(self.fc4(x))
        x = self.silu(self.fc5(x))
        return self.head(self.relu6(self.fc6(x)))


LABELS = ["relu", "tanh", "sigmoid", "gelu", "silu", "relu6"]


def _reference(y: torch.Tensor, x: torch.Tensor, kind: str, unit_axis: int) -> dict[str, float]:
    """Brute force: loop over units and samples of y (and its input x) in float64."""
    y, x = y.double(), x.double()
    moved = y.movedim(unit_axis, 0).reshape(y.shape[unit_axis], -1) if unit_axis else y.reshape(y.shape[0], -1).T
    inputs = x.movedim(unit_axis, 0).reshape(x.shape[unit_axis], -1) if unit_axis else x.reshape(x.shape[0], -1).T
    dead = saturated = 0
    for unit in range(moved.shape[0]):
        values, pre = moved[unit].tolist(), inputs[unit].tolist()
        if all(v == 0.0 for v in values):
            dead += 1
        elif TAILS[kind] is not None and all(TAILS[kind](v, p) for v, p in zip(values, pre, strict=True)):
            saturated += 1
    flat = y.reshape(-1).tolist()
    mean = sum(flat) / len(flat)
    std = math.sqrt(sum((v - mean) ** 2 for v in flat) / len(flat))
    return {
        "dead_fraction": dead / moved.shape[0],
        "saturated_fraction": saturated / moved.shape[0],
        "mean": mean,
        "std": std,
    }


def _first_forward_outputs(model: nn.Module, names: list[str]) -> tuple[dict, list]:
    """The test's own hooks: input and output of each named module on every forward (cloned)."""
    seen: dict[str, list] = {name: [] for name in names}
    handles = []
    for name in names:
        module = dict(model.named_modules())[name]

        def pre(module, args, name=name):
            seen[name].append([args[0].detach().clone(), None])

        def post(module, args, output, name=name):
            seen[name][-1][1] = output.detach().clone()

        handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
    return seen, handles


def _train(model_fn, path, probes, steps=6, batch=16, accumulate=1, evaluate=False, seed=0):
    torch.manual_seed(seed)
    model = model_fn()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    data = torch.Generator().manual_seed(1)
    session = gradlens.attach(model, optimizer, path, probes=probes) if path else None
    for _ in range(steps):
        optimizer.zero_grad()
        for _ in range(accumulate):
            x, y = torch.randn(batch, 5, generator=data) * 2, torch.randint(0, 3, (batch,), generator=data)
            (nn.functional.cross_entropy(model(x), y) / accumulate).backward()
        if evaluate:
            with torch.no_grad():
                model(torch.randn(7, 5, generator=data))
        optimizer.step()
    if session:
        session.close()
    return model


def test_values_equal_a_brute_force_reference_per_unit(tmp_path):
    torch.manual_seed(0)
    model = Mixed()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    seen, handles = _first_forward_outputs(model, LABELS)
    data = torch.Generator().manual_seed(1)
    with gradlens.attach(model, optimizer, tmp_path / "run.h5", probes=[ActivationStats(every=2)]):
        for _ in range(5):
            optimizer.zero_grad()
            x, y = torch.randn(16, 5, generator=data) * 2, torch.randint(0, 3, (16,), generator=data)
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
    for handle in handles:
        handle.remove()
    run = gradlens.load(tmp_path / "run.h5")
    frame = run.frame("activation_stats").set_index(["step", "layer", "quantity"])["value"]
    assert sorted(frame.index.get_level_values("step").unique()) == [0, 2, 4]
    assert run.array("activation_stats", "dead_fraction")[3]["layer"] == LABELS
    assert run.array("activation_stats", "dead_fraction")[1].dtype == np.float32
    for step in (0, 2, 4):
        for label in LABELS:
            x_in, y_out = seen[label][step]
            if label == "silu":  # in place: the test's pre-hook cloned the input before SiLU overwrote it
                assert torch.equal(y_out, nn.functional.silu(x_in))
            expected = _reference(y_out, x_in, label, unit_axis=1)
            for quantity, value in expected.items():
                assert frame[(step, label, quantity)] == pytest.approx(value, rel=1e-6, abs=1e-7), (step, label)
    at0 = {label: frame[(0, label, "dead_fraction")] for label in LABELS}
    assert at0["relu"] >= np.float32(5 / 12) and frame[(0, "relu6", "saturated_fraction")] >= np.float32(1 / 6)
    assert min(frame[(0, label, "saturated_fraction")] for label in ("tanh", "sigmoid", "gelu", "silu")) > 0
    assert (run.array("activation_stats", "unit_axis")[1] == 1).all()
    entry = next(p for p in run.meta["probes"] if p["name"] == "activation_stats")
    assert entry["kinds"] == {label: label for label in LABELS}
    assert entry["saturation"]["tanh"] == "|y| > 0.99" and entry["class"] == "ActivationStats"


class ConvNet(nn.Module):
    """Conv → BN → ReLU (channel units), a token MLP Linear → GELU on ``[B, T, H]`` (feature units), a ReLU
    module used twice (pooled), and a ReLU on the raw ``[B, C, L]`` input (no producer: entry units)."""

    def __init__(self) -> None:
        super().__init__()
        self.raw = nn.ReLU()
        self.conv = nn.Conv2d(2, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.act = nn.ReLU()
        self.proj = nn.Linear(6, 5)
        self.gelu = nn.GELU()
        self.head = nn.Linear(5 + 16, 3)
        with torch.no_grad():
            self.bn.bias[:2] = -30.0  # two channels dead at every position

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raw = self.raw(x.reshape(x.shape[0], 2, 16))  # [B, 2, 16]: produced by no module
        h = self.act(self.bn(self.conv(x)))  # [B, 6, 4, 4]
        tokens = self.gelu(self.proj(h.flatten(2).transpose(1, 2)))  # [B, 16, 5]
        again = self.act(tokens.mean(1).unsqueeze(-1) - 0.1)  # the shared ReLU, second call, [B, 5, 1]
        return self.head(torch.cat([again.squeeze(-1), raw.sum(1)], dim=1))


def test_units_follow_the_producing_layer_and_calls_are_pooled(tmp_path):
    torch.manual_seed(0)
    model = ConvNet()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    seen, handles = _first_forward_outputs(model, ["raw", "act", "gelu"])
    x = torch.randn(8, 2, 4, 4)
    with pytest.warns(UserWarning, match=r"'raw'.*unit_axes=\{'raw'"):
        with gradlens.attach(model, optimizer, tmp_path / "run.h5", probes=[ActivationStats()]):
            nn.functional.cross_entropy(model(x), torch.arange(8) % 3).backward()
            optimizer.step()
    for handle in handles:
        handle.remove()
    run = gradlens.load(tmp_path / "run.h5")
    frame = run.frame("activation_stats").set_index(["layer", "quantity"])["value"]
    _, axes, _, labels = run.array("activation_stats", "unit_axis")
    assert dict(zip(labels["layer"], axes[0].tolist(), strict=True)) == {"raw": 0, "act": 1, "gelu": 2}
    # the shared ReLU: both calls pooled — units of the [B,6,4,4] call along channels and of the [B,5,1] call
    # along ... its own resolved axis (1), entries of both in one mean and std
    (x1, y1), (x2, y2) = seen["act"]
    first, second = _reference(y1, x1, "relu", 1), _reference(y2, x2, "relu", 1)
    dead = (first["dead_fraction"] * 6 + second["dead_fraction"] * 5) / 11
    both = torch.cat([y1.double().reshape(-1), y2.double().reshape(-1)])
    assert frame[("act", "dead_fraction")] == pytest.approx(dead, rel=1e-6)
    assert frame[("act", "dead_fraction")] >= np.float32(2 / 11)
    assert frame[("act", "mean")] == pytest.approx(float(both.mean()), rel=1e-6)
    assert frame[("act", "std")] == pytest.approx(float(both.std(correction=0)), rel=1e-6)
    for label, axis, kind in (("raw", 0, "relu"), ("gelu", 2, "gelu")):
        ((x_in, y_out),) = seen[label]
        for quantity, value in _reference(y_out, x_in, kind, axis).items():
            assert frame[(label, quantity)] == pytest.approx(value, rel=1e-6, abs=1e-7), (label, quantity)


def test_declared_unit_axes_win_and_are_checked(tmp_path):
    torch.manual_seed(0)
    model = ConvNet()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # declared: no fallback warning
        with gradlens.attach(model, optimizer, tmp_path / "run.h5", probes=[ActivationStats(unit_axes={"raw": 1})]):
            nn.functional.cross_entropy(model(torch.randn(4, 2, 4, 4)), torch.arange(4) % 3).backward()
            optimizer.step()
    axes = gradlens.load(tmp_path / "run.h5").array("activation_stats", "unit_axis")[1][0]
    assert axes.tolist() == [1, 1, 2]
    with pytest.raises(ValueError, match="'nope' in unit_axes does not exist"):
        gradlens.attach(model, optimizer, tmp_path / "bad.h5", probes=[ActivationStats(unit_axes={"nope": 1})])


def test_training_is_bit_identical_with_and_without_the_probe(tmp_path):
    bare = _train(Mixed, None, [])
    probed = _train(Mixed, tmp_path / "run.h5", [ActivationStats(every=2), GradStats(every=3)])
    for (name, a), (_, b) in zip(bare.state_dict().items(), probed.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_only_the_first_training_forward_of_a_step_is_measured(tmp_path):
    torch.manual_seed(0)
    model = Mixed()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    seen, handles = _first_forward_outputs(model, ["relu"])
    data = torch.Generator().manual_seed(3)
    with gradlens.attach(model, optimizer, tmp_path / "run.h5", probes=[ActivationStats()]):
        for _ in range(2):
            optimizer.zero_grad()
            for _ in range(3):  # gradient accumulation: three micro-batches of different sizes
                model(torch.randn(5, 5, generator=data)).sum().backward()
            with torch.no_grad():  # an evaluation between backward and step: never measured
                model(torch.randn(9, 5, generator=data) + 100)
            optimizer.step()
    for handle in handles:
        handle.remove()
    frame = gradlens.load(tmp_path / "run.h5").frame("activation_stats").set_index(["step", "layer", "quantity"])
    for step in (0, 1):
        x_in, y_out = seen["relu"][step * 4]  # the first of the step's four forwards
        expected = _reference(y_out, x_in, "relu", 1)
        assert frame.value[(step, "relu", "mean")] == pytest.approx(expected["mean"], rel=1e-6)
        assert frame.value[(step, "relu", "dead_fraction")] == pytest.approx(expected["dead_fraction"])


def test_hooks_are_in_place_only_for_due_steps(tmp_path):
    torch.manual_seed(0)
    model = Mixed()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    hooked = []
    with gradlens.attach(model, optimizer, tmp_path / "run.h5", probes=[ActivationStats(every=3)]):
        for _ in range(7):
            hooked.append(bool(model.tanh._forward_hooks) or bool(model.fc1._forward_hooks))
            model(torch.randn(4, 5)).sum().backward()
            optimizer.step()
    assert hooked == [True, False, False, True, False, False, True]
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    # the producers (fc1, ...) are hooked only until every unit axis is known: at step 3 only activations
    with gradlens.attach(model, optimizer, tmp_path / "run2.h5", probes=[ActivationStats(every=3)]):
        for step in range(4):
            fc_hooked = bool(model.fc1._forward_hooks)
            model(torch.randn(4, 5)).sum().backward()
            optimizer.step()
            assert fc_hooked == (step == 0)


def test_a_module_that_did_not_run_records_nan(tmp_path):
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc, self.a, self.b = nn.Linear(3, 4), nn.ReLU(), nn.Tanh()

        def forward(self, x, use_b=False):
            return (self.b if use_b else self.a)(self.fc(x))

    model = Branchy()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with gradlens.attach(model, optimizer, tmp_path / "run.h5", probes=[ActivationStats()]):
        for use_b in (False, True):
            model(torch.randn(4, 3), use_b).sum().backward()
            optimizer.step()
    _, dead, _, labels = gradlens.load(tmp_path / "run.h5").array("activation_stats", "dead_fraction")
    assert labels["layer"] == ["a", "b"]
    assert not np.isnan(dead[0, 0]) and np.isnan(dead[0, 1])
    assert np.isnan(dead[1, 0]) and not np.isnan(dead[1, 1])


def test_configuration_mistakes_are_refused_at_attach(tmp_path):
    model = nn.Sequential(nn.Linear(3, 4), nn.Softmax(dim=1), nn.Linear(4, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match=r"no handler for Softmax \(module '1'\).*register_activation"):
        gradlens.attach(model, optimizer, tmp_path / "a.h5", probes=[ActivationStats(modules=["1"])])
    with pytest.raises(ValueError, match="'7' does not exist"):
        gradlens.attach(model, optimizer, tmp_path / "a.h5", probes=[ActivationStats(modules=["7"])])

    class Functional(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(3, 3)

        def forward(self, x):
            return torch.relu(self.fc(x))

    functional = Functional()
    with pytest.raises(ValueError, match="no activation module in Functional.*functional activations"):
        gradlens.attach(
            functional, torch.optim.SGD(functional.parameters(), lr=0.1), tmp_path / "a.h5", probes=[ActivationStats()]
        )
    assert not (tmp_path / "a.h5").exists()
