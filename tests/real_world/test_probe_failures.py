"""Probe and recorder failures never end training (issue 11.7); configuration mistakes fail attach().

A probe that raises is recorded in ``run.events()``, warned once, switched off after three failures in a
row; training and the other probes go on, and the weights are those of a run without probes. A recorder that
fails stops recording with a warning. A bad module name or a missing probe batch is raised by ``attach``
before the file exists.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import gradlens
from gradlens.probes import GRADS, ActivationStats, DominantFlow, GradStats, Probe, Quantity
from gradlens.session import ProbeFailureWarning, RecorderFailureWarning

STEPS = 6


class Flaky(Probe):
    """Records the first weight's gradient norm; raises at the listed steps."""

    needs = frozenset({GRADS})
    uses_layers = False

    def __init__(self, fail_at: set[int], name: str = "flaky") -> None:
        super().__init__()
        self.fail_at = fail_at
        self.name = name

    def quantities(self, ctx) -> dict[str, Quantity]:
        return {"norm": Quantity((), ())}

    def compute(self, ctx) -> dict[str, torch.Tensor]:
        if ctx.step in self.fail_at:
            raise NotImplementedError(f"no forward AD here (step {ctx.step})\nsecond line")
        return {"norm": ctx.parameters[0].parameter.grad.norm().double()}


def _train(path=None, probes=(), **attach_kw):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    data = torch.Generator().manual_seed(1)
    norms = []
    session = gradlens.attach(model, optimizer, path, probes=list(probes), **attach_kw) if path else None
    for _ in range(STEPS):
        x, y = torch.randn(8, 4, generator=data), torch.randint(0, 3, (8,), generator=data)
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        norms.append(float(model[0].weight.grad.double().norm()))
        optimizer.step()
        if session:
            session.log(loss=loss.item())
    if session:
        session.close()
    return model, norms


def _same_weights(a: nn.Module, b: nn.Module) -> None:
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(x, y), name


def test_a_probe_that_always_fails_is_recorded_warned_once_and_switched_off(tmp_path):
    bare, _ = _train()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model, norms = _train(tmp_path / "run.h5", [Flaky(set(range(STEPS))), GradStats()])
    _same_weights(bare, model)  # training finished, unperturbed
    failures = [w for w in caught if issubclass(w.category, ProbeFailureWarning)]
    assert len(failures) == 2  # one for the first failure, one when switched off
    assert "flaky" in str(failures[0].message) and "NotImplementedError" in str(failures[0].message)

    run = gradlens.load(tmp_path / "run.h5")
    events = run.events()
    errors = events[events.kind == "probe_error"]
    assert list(errors.step) == [0, 1, 2]  # three failures in a row, then switched off
    assert set(errors.source) == {"flaky"}
    assert errors.message.iloc[0] == "NotImplementedError: no forward AD here (step 0)"
    disabled = events[events.kind == "probe_disabled"]
    assert list(disabled.step) == [2] and list(disabled.source) == ["flaky"]
    assert len(run.frame("flaky")) == 0  # no record after (or at) a failure
    assert sorted(run.frame("grad_stats").step.unique()) == list(range(STEPS))  # the others go on
    assert list(run.scalars().step) == list(range(STEPS))
    assert run.status == "finished"


def test_a_probe_failing_now_and_then_keeps_recording_between_failures(tmp_path):
    with pytest.warns(ProbeFailureWarning):
        _, norms = _train(tmp_path / "run.h5", [Flaky({1, 2, 4})])
    run = gradlens.load(tmp_path / "run.h5")
    frame = run.frame("flaky")
    assert list(frame.step) == [0, 3, 5]
    assert list(frame.value) == pytest.approx([norms[0], norms[3], norms[5]], rel=1e-6)
    events = run.events()
    assert list(events[events.kind == "probe_error"].step) == [1, 2, 4]
    assert (events.kind == "probe_disabled").sum() == 0  # never three in a row


def test_a_recorder_failure_stops_recording_not_training(tmp_path):
    bare, _ = _train()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    data = torch.Generator().manual_seed(1)
    session = gradlens.attach(model, optimizer, tmp_path / "run.h5", probes=[GradStats()], flush_every=1)

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    with pytest.warns(RecorderFailureWarning, match="No space left on device"):
        for step in range(STEPS):
            if step == 2:
                session.recorder.record = broken
                session.recorder.flush = broken
            x, y = torch.randn(8, 4, generator=data), torch.randint(0, 3, (8,), generator=data)
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            session.log(loss=loss.item())
        session.close()
    _same_weights(bare, model)
    assert not session.recording
    run = gradlens.load(tmp_path / "run.h5")
    assert sorted(run.frame("grad_stats").step.unique()) == [0, 1]  # what was flushed before the failure
    assert run.status == "failed"


def test_attach_with_a_bad_module_name_touches_no_file(tmp_path):
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    path = tmp_path / "new" / "run.h5"
    with pytest.raises(ValueError, match="'3' declared in the ModelSpec does not exist"):
        gradlens.attach(model, optimizer, path, probes=[GradStats()], layers=["0", "3"])
    assert not path.exists() and not path.parent.exists()
    with pytest.raises(ValueError, match="need a probe batch"):
        gradlens.attach(model, optimizer, path, probes=[DominantFlow(activations=["1"])])
    assert not path.parent.exists()
    with pytest.raises(ValueError, match="'nope'"):
        gradlens.attach(
            model,
            optimizer,
            path,
            probes=[DominantFlow(activations=["nope"])],
            probe_batch=(torch.randn(2, 4), torch.tensor([0, 1])),
        )
    assert not path.parent.exists()
    for module in model.modules():  # nothing left behind by the failed attach
        assert not module._forward_hooks and not module._forward_pre_hooks
    assert not optimizer._optimizer_step_pre_hooks and not optimizer._optimizer_step_post_hooks


def test_probe_validate_runs_at_attach(tmp_path):
    class Picky(Flaky):
        def validate(self, model, spec):
            raise ValueError("Picky needs a module called 'encoder'; pass encoder=...")

    model = nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="Picky needs"):
        gradlens.attach(model, optimizer, tmp_path / "run.h5", probes=[Picky(set())])
    assert not (tmp_path / "run.h5").exists()


def test_a_probe_with_nothing_to_measure_is_switched_off_and_the_others_record(tmp_path):
    model = nn.Sequential(nn.LayerNorm(3))  # no weight layer: GradStats(params="weights") has no rows
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.warns(ProbeFailureWarning, match="empty axis"):
        with gradlens.attach(
            model, optimizer, tmp_path / "run.h5", probes=[GradStats(params="weights", name="w"), GradStats()]
        ):
            model(torch.randn(2, 3)).sum().backward()
            optimizer.step()
    run = gradlens.load(tmp_path / "run.h5")
    assert list(run.events().kind) == ["probe_error", "probe_disabled"]
    assert run.array("grad_stats", "norm")[3]["layer"] == ["0.weight", "0.bias"]


class BrokenActivations(ActivationStats):
    """ActivationStats whose hook raises inside the training forward of the listed steps."""

    def __init__(self, fail_at: set[int]) -> None:
        super().__init__(name="broken_activations")
        self.fail_at = fail_at
        self.captures = -1  # one capture per due step: every step here

    def begin_capture(self) -> None:
        super().begin_capture()
        self.captures += 1

    def after_module(self, name, args, output) -> None:
        if self.captures in self.fail_at:
            raise FloatingPointError(f"activation hook broke on {name!r}")
        super().after_module(name, args, output)


def test_an_activation_hook_that_raises_never_reaches_the_training_loop(tmp_path):
    bare, _ = _train()
    with pytest.warns(ProbeFailureWarning, match=r"broken_activations.*FloatingPointError: activation hook broke"):
        model, _ = _train(tmp_path / "run.h5", [BrokenActivations({1, 2}), ActivationStats(), GradStats()])
    _same_weights(bare, model)
    run = gradlens.load(tmp_path / "run.h5")
    errors = run.events()[run.events().kind == "probe_error"]
    assert list(errors.step) == [1, 2] and set(errors.source) == {"broken_activations"}
    assert errors.message.iloc[0] == "FloatingPointError: activation hook broke on '1'"
    assert sorted(run.frame("broken_activations").step.unique()) == [0, 3, 4, 5]  # between failures it records
    assert sorted(run.frame("activation_stats").step.unique()) == list(range(STEPS))  # the others go on
    assert sorted(run.frame("grad_stats").step.unique()) == list(range(STEPS))


def test_an_activation_probe_that_saw_no_training_forward_is_a_recorded_failure(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.warns(ProbeFailureWarning, match="no training forward of the activation modules"):
        with gradlens.attach(model, optimizer, tmp_path / "run.h5", probes=[ActivationStats(), GradStats()]):
            for _ in range(4):
                with torch.no_grad():  # e.g. a forward whose graph is rebuilt elsewhere: nothing to measure
                    model(torch.randn(2, 4))
                for p in model.parameters():
                    p.grad = torch.ones_like(p)
                optimizer.step()
    run = gradlens.load(tmp_path / "run.h5")
    events = run.events()
    assert list(events[events.kind == "probe_error"].step) == [0, 1, 2]
    assert list(events[events.kind == "probe_disabled"].source) == ["activation_stats"]
    assert sorted(run.frame("grad_stats").step.unique()) == [0, 1, 2, 3]
    assert not any(m._forward_hooks for m in model.modules())  # switched off: its hooks are gone
