"""Gradient accumulation and the ``session.log`` rule (issue 11.10).

Rule (docs/quickstart.md, ``Session.log``): a value logged after a forward pass that builds a graph and
before the next ``optimizer.step()`` belongs to that upcoming step; a value logged after the step and before
the next such forward belongs to the step just taken. With 4 micro-batches per step, the micro-batch losses
land on steps 0,0,0,0,1,1,1,1,...; the learning rate logged after each step and an evaluation under
``torch.no_grad()`` land on the step just taken; probes see the accumulated gradient.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import gradlens
from gradlens.probes import GradStats

STEPS, MICRO = 3, 4


def _train(path=None):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    data = torch.Generator().manual_seed(2)
    session = gradlens.attach(model, optimizer, path, probes=[GradStats()]) if path else None
    losses, accumulated = [], []
    for _ in range(STEPS):
        optimizer.zero_grad()
        for _ in range(MICRO):
            x, y = torch.randn(5, 4, generator=data), torch.randint(0, 2, (5,), generator=data)
            loss = nn.functional.cross_entropy(model(x), y) / MICRO
            loss.backward()
            losses.append(loss.item())
            if session:
                session.log(loss=loss.item())  # before optimizer.step(): the upcoming step
        accumulated.append(model[0].weight.grad.double().clone())
        optimizer.step()
        with torch.no_grad():
            evaluation = float(model(torch.ones(1, 4)).sum())
        if session:
            session.log(lr=optimizer.param_groups[0]["lr"], evaluation=evaluation)  # the step just taken
    if session:
        session.close()
    return model, losses, accumulated


def test_micro_batch_losses_land_on_the_step_they_feed(tmp_path):
    bare, _, _ = _train()
    model, losses, accumulated = _train(tmp_path / "run.h5")
    for (name, a), (_, b) in zip(bare.state_dict().items(), model.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    run = gradlens.load(tmp_path / "run.h5")
    scalars = run.scalars()
    loss = scalars[scalars.name == "loss"]
    assert list(loss.step) == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]
    assert list(loss.value) == pytest.approx(losses, rel=1e-15)
    assert list(scalars[scalars.name == "lr"].step) == [0, 1, 2]
    assert list(scalars[scalars.name == "evaluation"].step) == [0, 1, 2]  # no_grad forwards do not count
    norms = run.frame("grad_stats").query("layer == '0.weight' and quantity == 'norm'")
    assert list(norms.step) == [0, 1, 2]
    assert list(norms.value) == pytest.approx([float(g.norm()) for g in accumulated], rel=1e-6)


def test_explicit_step_and_log_before_any_step(tmp_path):
    model = nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with gradlens.attach(model, optimizer, tmp_path / "run.h5", probes=[GradStats()]) as session:
        session.log(setup=1.0)  # before anything: step 0
        session.log(step=7, chosen=2.0)
        model(torch.ones(1, 2)).sum().backward()
        optimizer.step()
        session.log(after=3.0)
    scalars = gradlens.load(tmp_path / "run.h5").scalars().set_index("name")["step"]
    assert (scalars["setup"], scalars["chosen"], scalars["after"]) == (0, 7, 0)
