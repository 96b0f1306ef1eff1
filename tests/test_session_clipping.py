"""What the optimizer really saw (issue 21.3): clipping calls and parameters outside every param group.

``clip_grad_norm_`` on the session's parameters is recorded as ``clip/preclip_norm`` (what it returned) and
``clip/max_norm`` at the step it preceded; the call's result is untouched, other parameters pass through, the
wrapper leaves with the last session (also on exceptions). A trainable parameter in no param group is
``in_optimizer: False`` in ``meta["parameters"]`` and a warning at attach.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn
from torch.nn.utils import clip_grad as clip_module
from torch.nn.utils import clip_grad_norm_ as bound_before_attach

import gradlens
from gradlens.probes import GradStats
from gradlens.session.clipping import INNER, PUBLIC, ClipWatch
from gradlens.session.core import ParameterGroupWarning
from tests.tiny_models import lightning_classifier

ORIGINAL = getattr(clip_module, INNER)


def _unwrapped() -> bool:
    return (
        getattr(clip_module, INNER) is ORIGINAL
        and getattr(torch.nn.utils, PUBLIC) is ORIGINAL
        and not ClipWatch.listeners
    )


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)).double()


def _batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    data = torch.Generator().manual_seed(100 + step)
    return torch.randn(16, 4, generator=data, dtype=torch.float64), torch.randint(0, 3, (16,), generator=data)


def _scaled_to(model: nn.Module, norm: float) -> None:
    """Scale the gradients so that their total 2-norm is exactly ``norm`` (float64)."""
    total = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()]))
    for p in model.parameters():
        p.grad.mul_(norm / total)


def _scalars(run, name: str) -> tuple[list[int], list[float]]:
    frame = run.scalars()
    rows = frame[frame.name == name]
    return list(rows.step), list(rows.value)


def test_clipping_at_1e3_of_a_natural_norm_of_0_25_is_recorded_before_and_after(tmp_path):
    model = _net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    returned = []
    with gradlens.attach(model, optimizer, tmp_path / "run.h5", probes=[GradStats()]):
        for step in range(3):
            x, y = _batch(step)
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            _scaled_to(model, 0.25)
            returned.append(torch.nn.utils.clip_grad_norm_(model.parameters(), 1e-3))
            optimizer.step()
    run = gradlens.load(tmp_path / "run.h5")
    steps, preclip = _scalars(run, "clip/preclip_norm")
    assert steps == [0, 1, 2]
    assert preclip == pytest.approx([0.25] * 3, rel=1e-12)
    assert preclip == [float(r) for r in returned]  # exactly what clip_grad_norm_ returned
    assert _scalars(run, "clip/max_norm") == ([0, 1, 2], [1e-3] * 3)
    frame = run.frame("grad_stats")
    norms = frame[frame.quantity == "norm"].groupby("step").value.apply(lambda v: float((v**2).sum() ** 0.5))
    # what the optimizer saw: the clipped gradient, 1e-3 · 0.25 / (0.25 + 1e-6) (statistics stored as float32)
    assert list(norms) == pytest.approx([1e-3 * 0.25 / (0.25 + 1e-6)] * 3, rel=1e-6)
    assert _unwrapped()  # removed at close


def test_every_way_of_calling_clip_grad_norm_is_seen_and_returns_the_same(tmp_path):
    reference = _net()
    x, y = _batch(0)
    nn.functional.cross_entropy(reference(x), y).backward()
    expected = torch.nn.utils.clip_grad_norm_(reference.parameters(), 0.05)
    model = _net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    calls = [
        lambda: torch.nn.utils.clip_grad_norm_(model.parameters(), 0.05),
        lambda: bound_before_attach(list(model.parameters()), max_norm=0.05),  # imported before attach
        lambda: clip_module.clip_grad_norm_(model.parameters(), 0.05, norm_type=2.0, foreach=False),
    ]
    with gradlens.attach(model, optimizer, tmp_path / "run.h5"):
        for call in calls:
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            got = call()
            assert torch.equal(got, expected) and got.dtype == expected.dtype
            for p, q in zip(model.parameters(), reference.parameters(), strict=True):
                assert torch.equal(p.grad, q.grad)  # clipped exactly as without gradlens
            optimizer.step()
    steps, preclip = _scalars(gradlens.load(tmp_path / "run.h5"), "clip/preclip_norm")
    assert steps == [0, 1, 2] and preclip == [float(expected)] * 3


def test_other_parameters_pass_through_and_two_sessions_each_see_their_own(tmp_path):
    generator, critic = _net(0), _net(1)
    opt_g = torch.optim.SGD(generator.parameters(), lr=0.01)
    opt_c = torch.optim.SGD(critic.parameters(), lr=0.01)
    free = nn.Linear(2, 2).double()  # clipped too, watched by no session
    first = gradlens.attach(generator, opt_g, tmp_path / "g.h5")
    second = gradlens.attach(critic, opt_c, tmp_path / "c.h5")
    norms = {"g": [], "c": []}
    for step in range(2):
        x, y = _batch(step)
        for name, model, optimizer, limit in (("g", generator, opt_g, 0.5), ("c", critic, opt_c, 0.7)):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            norms[name].append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), limit)))
            optimizer.step()
        free(torch.ones(1, 2, dtype=torch.float64)).sum().backward()
        torch.nn.utils.clip_grad_norm_(free.parameters(), 0.1)
        # one call over both models is neither session's norm: not recorded
        torch.nn.utils.clip_grad_norm_([*generator.parameters(), *critic.parameters()], 10.0)
    first.close()  # the first to attach closes first: the second keeps observing
    assert getattr(clip_module, INNER) is not ORIGINAL
    x, y = _batch(5)
    opt_c.zero_grad()
    nn.functional.cross_entropy(critic(x), y).backward()
    norms["c"].append(float(torch.nn.utils.clip_grad_norm_(critic.parameters(), 0.7)))
    opt_c.step()
    second.close()
    assert _unwrapped()
    for name, limit in (("g", 0.5), ("c", 0.7)):
        run = gradlens.load(tmp_path / f"{name}.h5")
        steps, preclip = _scalars(run, "clip/preclip_norm")
        assert preclip == norms[name] and steps == list(range(len(norms[name])))
        assert set(_scalars(run, "clip/max_norm")[1]) == {limit}


def test_the_wrapper_leaves_when_training_raises(tmp_path):
    model = _net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(RuntimeError, match="diverged"):
        with gradlens.attach(model, optimizer, tmp_path / "run.h5"):
            x, y = _batch(0)
            nn.functional.cross_entropy(model(x), y).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            raise RuntimeError("diverged")
    assert _unwrapped()
    run = gradlens.load(tmp_path / "run.h5")
    assert run.status == "failed"
    assert _scalars(run, "clip/max_norm") == ([0], [1.0])  # the pending call reached the file


def test_a_failed_attach_leaves_no_wrapper(tmp_path):
    model = _net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    (tmp_path / "run.h5").write_bytes(b"taken")
    with pytest.raises(FileExistsError):
        gradlens.attach(model, optimizer, tmp_path / "run.h5")
    assert _unwrapped()


def test_trainable_parameters_outside_every_param_group_are_marked_and_warned(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    model[4].bias.requires_grad_(False)  # frozen on purpose: not a mistake, no warning
    # the middle layer was left out of the optimizer by mistake
    optimizer = torch.optim.SGD([*model[0].parameters(), model[4].weight], lr=0.1)
    with pytest.warns(ParameterGroupWarning) as caught:
        session = gradlens.attach(model, optimizer, tmp_path / "run.h5")
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "'2.weight'" in message and "'2.bias'" in message and "4.bias" not in message
    session.close()
    rows = {row["name"]: row for row in gradlens.load(tmp_path / "run.h5").meta["parameters"]}
    assert {name: row["in_optimizer"] for name, row in rows.items()} == {
        "0.weight": True,
        "0.bias": True,
        "2.weight": False,
        "2.bias": False,
        "4.weight": True,
        "4.bias": False,
    }
    assert not rows["4.bias"]["trainable"]


def test_no_warning_when_every_trainable_parameter_is_optimized(tmp_path):
    model = _net()
    optimizer = torch.optim.Adam([{"params": model[0].parameters()}, {"params": model[2].parameters(), "lr": 0.1}])
    with warnings.catch_warnings():
        warnings.simplefilter("error", ParameterGroupWarning)
        gradlens.attach(model, optimizer, tmp_path / "run.h5").close()
    rows = gradlens.load(tmp_path / "run.h5").meta["parameters"]
    assert all(row["in_optimizer"] for row in rows)


def test_parameters_updated_by_the_users_own_rule_are_named_not_warned_and_not_diagnosed(tmp_path):
    from gradlens.doctor import diagnose

    model = _net()
    optimizer = torch.optim.SGD(model[0].parameters(), lr=0.1)  # model[2] is updated by a rule of the user's own
    with warnings.catch_warnings():
        warnings.simplefilter("error", ParameterGroupWarning)
        session = gradlens.attach(model, optimizer, tmp_path / "run.h5", updated_elsewhere=["2.weight", "2.bias"])
    session.close()
    run = gradlens.load(tmp_path / "run.h5")
    rows = {row["name"]: row for row in run.meta["parameters"]}
    assert [n for n, r in rows.items() if r.get("updated_elsewhere")] == ["2.weight", "2.bias"]
    assert not rows["2.weight"]["in_optimizer"] and rows["0.weight"]["in_optimizer"]
    assert "not_in_optimizer" not in {f.rule for f in diagnose(run)}
    with pytest.raises(ValueError, match=r"updated_elsewhere names '2\.alpha'.*named_parameters"):
        gradlens.attach(model, optimizer, tmp_path / "other.h5", updated_elsewhere=["2.alpha"])


def _total_norms(run) -> list[float]:
    frame = run.frame("grad_stats")
    norms = frame[frame.quantity == "norm"]
    return [float((v**2).sum() ** 0.5) for _, v in sorted(norms.groupby("step").value)]


def test_lightning_gradient_clip_val_is_recorded_through_torch_nn_utils(tmp_path):
    pl = pytest.importorskip("lightning.pytorch")
    from gradlens.integrations.lightning import GradlensCallback

    x = torch.cat([_batch(step)[0] for step in range(3)])
    y = torch.cat([_batch(step)[1] for step in range(3)])
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
    callback = GradlensCallback(tmp_path / "run.h5", probes=[GradStats()])
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=1,
        gradient_clip_val=1e-3,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[callback],
    )
    trainer.fit(lightning_classifier(_net()), loader)
    run = gradlens.load(tmp_path / "run.h5")
    steps, preclip = _scalars(run, "clip/preclip_norm")
    assert steps == [0, 1, 2] and _scalars(run, "clip/max_norm") == ([0, 1, 2], [1e-3] * 3)
    assert min(preclip) > 1e-2  # the natural norm, far above the threshold ...
    clipped = [1e-3 * norm / (norm + 1e-6) for norm in preclip]
    assert _total_norms(run) == pytest.approx(clipped, rel=1e-6)  # ... and what the optimizer saw (float32)


def test_hugging_face_trainer_max_grad_norm_is_recorded_and_equals_its_grad_norm(tmp_path):
    transformers = pytest.importorskip("transformers")
    from gradlens.integrations.transformers import GradlensCallback

    class Rows(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 48

        def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
            x, y = _batch(index // 16)
            return {"x": x[index % 16].float(), "labels": y[index % 16]}

    class Classifier(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = _net().float()

        def forward(self, x, labels=None):
            logits = self.net(x)
            return {"loss": nn.functional.cross_entropy(logits, labels), "logits": logits}

    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=16,
        max_steps=3,
        max_grad_norm=0.01,
        logging_steps=1,
        report_to="none",
        use_cpu=True,
        save_strategy="no",
        disable_tqdm=True,
    )
    callback = GradlensCallback(tmp_path / "run.h5", probes=[GradStats()])
    transformers.Trainer(model=Classifier(), args=args, train_dataset=Rows(), callbacks=[callback]).train()
    run = gradlens.load(tmp_path / "run.h5")
    steps, preclip = _scalars(run, "clip/preclip_norm")
    assert len(steps) == 3 and _scalars(run, "clip/max_norm")[1] == [0.01] * 3
    # the Trainer logs the norm clip_grad_norm_ returned: the same number, step for step
    assert preclip == pytest.approx(_scalars(run, "grad_norm")[1], rel=1e-6)
    clipped = [0.01 * norm / (norm + 1e-6) for norm in preclip]
    assert _total_norms(run) == pytest.approx(clipped, rel=1e-6)
