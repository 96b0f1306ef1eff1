"""Mixed precision on CPU: unscaled gradients, skipped steps recorded with their non-finite counts, bf16
gradients summed in float32 or wider."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import gradlens
from gradlens.probes import GradStats
from tests.distributed.reference import assert_stats_close, grad_stats_by_hand, recorded

STEPS = 8


def model_and_data():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 4))
    generator = torch.Generator().manual_seed(5)
    batches = [
        (torch.randn(32, 16, generator=generator), torch.randint(0, 4, (32,), generator=generator))
        for _ in range(STEPS)
    ]
    return model, batches


def amp_loop(session=None, by_hand=None):
    """fp16 autocast + GradScaler starting at 2**20: the scaled fp16 gradients overflow for the first steps."""
    model, batches = model_and_data()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**20)
    skipped = []
    context = gradlens.attach(model, optimizer, session, probes=[GradStats()], scaler=scaler) if session else None
    for x, y in batches:
        optimizer.zero_grad()
        with torch.autocast("cpu", dtype=torch.float16):
            loss = nn.functional.cross_entropy(model(x), y)
        scaler.scale(loss).backward()
        if by_hand is not None:
            scaler.unscale_(optimizer)  # what scaler.step does first; the gradients the probes must see
            by_hand.append(grad_stats_by_hand({n: p.grad for n, p in model.named_parameters()}))
            skipped.append(
                sum(v.item() for v in scaler._per_optimizer_states[id(optimizer)]["found_inf_per_device"].values()) > 0
            )
        scaler.step(optimizer)
        scaler.update()
    if context is not None:
        context.close()
    return scaler, skipped, [p.detach().clone() for p in model.parameters()]


def test_unscaled_gradients_and_skipped_steps_are_recorded(tmp_path):
    expected: list = []
    _, skipped, reference_weights = amp_loop(by_hand=expected)
    assert any(skipped) and not all(skipped)  # the test needs both kinds of steps
    path = tmp_path / "amp.h5"
    scaler, _, weights = amp_loop(session=path)

    run = gradlens.load(path)
    got = recorded(run.frame("grad_stats"))
    assert sorted(got) == list(range(STEPS))  # skipped steps are recorded too (the probes fired on them)
    events = run.events()
    skipped_steps = [step for step, s in enumerate(skipped) if s]
    assert events[events.kind == "step_skipped"].step.tolist() == skipped_steps
    assert set(events[events.kind == "step_skipped"].source) == {"GradScaler"}
    for step in range(STEPS):
        if skipped[step]:
            # per-parameter non-finite counts of the unscaled gradients; the other statistics are not finite
            for name, stats in expected[step].items():
                nonfinite = stats["nonfinite"]
                assert got[step][name]["nonfinite"] == nonfinite
            assert sum(s["nonfinite"] for s in got[step].values()) > 0
        else:
            assert_stats_close(got[step], expected[step], rtol=1e-6, where=f"step {step}")
    # observing changed nothing, and the scaler's step is its own again after close
    for a, b in zip(weights, reference_weights, strict=True):
        assert a.equal(b)
    assert "step" not in vars(scaler)


def test_skipped_step_nonfinite_counts_by_hand():
    """Stand-alone check of the counting: the first step overflows in every parameter downstream of the loss."""
    expected: list = []
    _, skipped, _ = amp_loop(by_hand=expected)
    assert skipped[0] and sum(s["nonfinite"] for s in expected[0].values()) > 0


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_gradients_are_summed_in_float32_or_wider(tmp_path, dtype):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(256, 256), nn.Tanh(), nn.Linear(256, 8)).to(dtype)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    x, y = torch.randn(64, 256, dtype=dtype), torch.randint(0, 8, (64,))
    with gradlens.attach(model, optimizer, tmp_path / "low.h5", probes=[GradStats()]):
        nn.functional.cross_entropy(model(x).float(), y).backward()
        expected = grad_stats_by_hand({n: p.grad for n, p in model.named_parameters()})  # float64 of the same
        optimizer.step()
    got = recorded(gradlens.load(tmp_path / "low.h5").frame("grad_stats"))[0]
    # float32 accumulation of 65536 entries: ~1e-6; a bf16/fp16 result would be off by ~1e-3
    assert_stats_close(got, expected, rtol=1e-5, where=str(dtype))


def test_a_scaler_that_is_not_a_grad_scaler_is_refused(tmp_path):
    model = nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="scaler must be a torch.amp.GradScaler, got object"):
        gradlens.attach(model, optimizer, tmp_path / "x.h5", probes=[GradStats()], scaler=object())
    assert not (tmp_path / "x.h5").exists()
