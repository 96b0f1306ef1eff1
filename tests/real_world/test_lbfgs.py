"""Closure optimizers (issue 11.5): probes see the gradient the update starts from, never a stale one.

``optimizer.step(closure)`` evaluates the loss inside the step. The session fires the probes right after the
closure's first evaluation in each step: the gradient at the weights the step starts from. The reference is
``torch.autograd.grad`` in float64 at a copy of those weights.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import gradlens
from gradlens.probes import GradStats, UpdateRatio

STEPS = 4


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2)).double()


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    data = torch.Generator().manual_seed(1)
    return torch.randn(16, 3, generator=data, dtype=torch.float64), torch.randint(0, 2, (16,), generator=data)


def _reference_grads(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """Gradients at the model's current weights, by hand: the network written out, on detached copies."""
    w = {n: p.detach().clone().requires_grad_() for n, p in model.named_parameters()}
    hidden = torch.tanh(x @ w["0.weight"].T + w["0.bias"])
    loss = nn.functional.cross_entropy(hidden @ w["2.weight"].T + w["2.bias"], y)
    return dict(zip(w, torch.autograd.grad(loss, list(w.values())), strict=True))


def _train(make_optimizer, path=None, probes=()):
    model = _model()
    optimizer = make_optimizer(model.parameters())
    x, y = _data()
    evaluations = []
    references, before, after = [], [], []

    def closure():
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        evaluations.append(1)
        return loss

    session = gradlens.attach(model, optimizer, path, probes=list(probes)) if path else None
    for _ in range(STEPS):
        references.append(_reference_grads(model, x, y))
        before.append({n: p.detach().clone() for n, p in model.named_parameters()})
        optimizer.step(closure)
        after.append({n: p.detach().clone() for n, p in model.named_parameters()})
    if session:
        session.close()
    return model, references, before, after, len(evaluations)


OPTIMIZERS = {
    "lbfgs": lambda params: torch.optim.LBFGS(params, lr=0.5, max_iter=5, history_size=4),
    "lbfgs_strong_wolfe": lambda params: torch.optim.LBFGS(params, max_iter=3, line_search_fn="strong_wolfe"),
    "sgd_momentum_closure": lambda params: torch.optim.SGD(params, lr=0.1, momentum=0.9),
    "adam_closure": lambda params: torch.optim.Adam(params, lr=0.01),
}


@pytest.mark.parametrize("which", list(OPTIMIZERS))
def test_closure_optimizer_records_the_gradient_at_the_steps_starting_weights(tmp_path, which):
    make = OPTIMIZERS[which]
    bare, _, _, _, bare_evaluations = _train(make)
    model, references, before, after, evaluations = _train(make, tmp_path / "run.h5", [GradStats(), UpdateRatio()])
    for (name, a), (_, b) in zip(bare.state_dict().items(), model.state_dict().items(), strict=True):
        assert torch.equal(a, b), name  # bit-identical with and without probes
    assert evaluations == bare_evaluations  # the wrapper adds no closure evaluation
    if which.startswith("lbfgs"):
        assert evaluations > STEPS  # several evaluations per step: only the first one is recorded

    run = gradlens.load(tmp_path / "run.h5")
    frame = run.frame("grad_stats").set_index(["step", "layer", "quantity"])["value"]
    assert sorted(frame.index.get_level_values("step").unique()) == list(range(STEPS))
    assert np.isfinite(frame.to_numpy()).all()  # no NaN at step 0
    for step, reference in enumerate(references):
        for name, g in reference.items():
            # GradStats stores its float64-accumulated statistics as float32 (schema 3): relative 6e-8
            assert frame[(step, name, "norm")] == pytest.approx(float(g.norm()), rel=1e-7), (step, name)
            assert frame[(step, name, "mean")] == pytest.approx(float(g.mean()), rel=1e-7, abs=1e-16)
            assert frame[(step, name, "max_abs")] == pytest.approx(float(g.abs().max()), rel=1e-7)
    # not the gradient of the step's last evaluation (stale for LBFGS, whose last closure call is elsewhere)
    updates = run.frame("update_ratio").set_index(["step", "layer", "quantity"])["value"]
    for step in range(STEPS):
        for name in before[step]:
            delta = (after[step][name] - before[step][name]).norm()
            assert updates[(step, name, "update_norm")] == pytest.approx(float(delta), rel=1e-12)
            weight = before[step][name].norm()
            assert updates[(step, name, "weight_norm")] == pytest.approx(float(weight), rel=1e-12)
            assert updates[(step, name, "ratio")] == pytest.approx(float(delta / weight), rel=1e-12)


def test_lbfgs_gradients_differ_from_the_last_closure_evaluation(tmp_path):
    """The recorded gradient is the step's first one, which LBFGS's later evaluations overwrite in .grad."""
    model = _model()
    optimizer = OPTIMIZERS["lbfgs"](model.parameters())
    x, y = _data()

    def closure():
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss

    with gradlens.attach(model, optimizer, tmp_path / "run.h5", probes=[GradStats()]):
        reference = _reference_grads(model, x, y)
        optimizer.step(closure)
        last = {n: p.grad.clone() for n, p in model.named_parameters()}
    frame = gradlens.load(tmp_path / "run.h5").frame("grad_stats").set_index(["layer", "quantity"])["value"]
    name = "0.weight"
    # GradStats stores its float64-accumulated statistics as float32 (schema 3): relative 6e-8
    assert frame[(name, "norm")] == pytest.approx(float(reference[name].norm()), rel=1e-7)
    assert frame[(name, "norm")] != pytest.approx(float(last[name].norm()), rel=1e-6)
