"""The live doctor inside a session (issue 21.5, session side): feeding, findings as events and warnings, the
``on_finding`` callback, ``stop_on``, triggered detail and the flight recorder.

The session's side is tested with a scripted engine (it returns chosen findings at chosen checks), so every
path is exact; tests/test_session_live_doctor.py runs the doctor's real ``LiveDoctor`` on faulty runs.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch
from torch import nn

import gradlens
from gradlens.probes import ActivationStats, GradStats
from gradlens.session import CallbackFailureWarning, FindingWarning, TrainingStopped
from tests.tiny_models import lightning_classifier


@dataclass(frozen=True)
class Fix:
    action: str
    because: str = ""


@dataclass(frozen=True)
class Found:
    """What the session reads of a finding (the doctor's ``Finding`` has these and more)."""

    rule: str
    severity: str
    title: str
    step: int | None = None
    layers: tuple[str, ...] = ()
    fixes: tuple[Fix, ...] = ()

    def event_message(self) -> str:
        return json.dumps(
            {"severity": self.severity, "step": self.step, "layers": list(self.layers), "summary": self.title},
            separators=(",", ":"),
        )


@dataclass
class Scripted:
    """An engine that keeps what it is fed and returns ``script[step]`` at the check of that step."""

    script: dict[int, list] = field(default_factory=dict)
    fail_at: set[int] = field(default_factory=set)
    records: list = field(default_factory=list)
    scalars: list = field(default_factory=list)
    events: list = field(default_factory=list)
    checks: list = field(default_factory=list)

    def observe(self, step, probe, values, labels, cls=None):
        assert all(isinstance(v, np.ndarray) for v in values.values())  # host memory, as the doctor wants
        self.records.append((step, probe, {k: v.copy() for k, v in values.items()}, list(labels), cls))

    def observe_scalars(self, step, mapping):
        self.scalars.append((step, dict(mapping)))

    def observe_event(self, step, kind, source, message=""):
        self.events.append((step, kind, source, message))

    def check(self, step=None):
        self.checks.append(step)
        if step in self.fail_at:
            raise ZeroDivisionError(f"rule bug at {step}")
        return self.script.get(step, [])


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))


def _batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    data = torch.Generator().manual_seed(100 + step)
    return torch.randn(8, 4, generator=data), torch.randint(0, 3, (8,), generator=data)


def _train(path=None, steps=12, probes=(), crash_at=None, clip=None, grads=None, **attach_kw):
    """A plain loop; returns (model, session). ``grads`` collects each step's gradients."""
    model = _net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    session = gradlens.attach(model, optimizer, path, probes=list(probes), **attach_kw) if path else None
    with session if session is not None else _nothing():
        for step in range(steps):
            if step == crash_at:
                raise RuntimeError("data loader died")
            x, y = _batch(step)
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            if clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            if grads is not None:
                grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
            optimizer.step()
            if session is not None:
                session.log(loss=loss.item())
    return model, session


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _same_weights(a: nn.Module, b: nn.Module) -> None:
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(x, y), name


def test_the_engine_is_fed_every_record_scalar_and_event_and_checked_every_n_steps(tmp_path):
    engine = Scripted()
    grads = []
    _train(tmp_path / "run.h5", steps=12, probes=[GradStats()], clip=0.5, grads=grads, live=5, engine=engine)
    assert engine.checks == [4, 9]  # after 5 and 10 steps
    steps = [record[0] for record in engine.records]
    assert steps == list(range(10))  # what was recorded before the last check
    step, probe, values, labels, cls = engine.records[3]
    assert (probe, cls, labels) == ("grad_stats", "GradStats", ["0.weight", "0.bias", "2.weight", "2.bias"])
    assert values["norm"] == pytest.approx([float(g.double().norm()) for g in grads[3].values()], rel=1e-6)
    assert set(values) == {"mean", "mean_abs", "norm", "max_abs", "nonfinite"}
    fed = {(s, name) for s, mapping in engine.scalars for name in mapping}
    # the loss of step 9 is logged after optimizer.step(), where the check ran: it waits for the next check
    assert {(s, "loss") for s in range(9)} <= fed and (9, "loss") not in fed
    assert {(s, "clip/preclip_norm") for s in range(10)} <= fed and {(s, "clip/max_norm") for s in range(10)} <= fed
    run = gradlens.load(tmp_path / "run.h5")
    assert run.meta["probes"][0]["class"] == "GradStats" and run.status == "finished"


def test_findings_are_events_at_once_warnings_once_and_callbacks(tmp_path):
    finding = Found(
        "dead_units",
        "warning",
        "80% of the units in 1 are dead",
        step=3,
        layers=("1",),
        fixes=(Fix("use LeakyReLU in 1"),),
    )
    engine = Scripted({4: [finding]})
    seen, in_file = [], []

    def on_finding(found):
        seen.append(found)
        # the event is in the file already, flushed: a reader sees it while the run goes on
        events = gradlens.load(tmp_path / "run.h5").events()
        in_file.append(events[events.kind == "finding"].to_dict("records"))

    with pytest.warns(
        FindingWarning,
        match=r"warning dead_units: 80% of the units in 1 are dead \(from step 3 in 1\); "
        r"fix: use LeakyReLU in 1",
    ) as caught:
        _train(tmp_path / "run.h5", probes=[GradStats()], live=5, engine=engine, on_finding=on_finding)
    assert len([w for w in caught if w.category is FindingWarning]) == 1
    assert seen == [finding]
    (event,) = in_file[0]
    assert (event["step"], event["source"]) == (4, "dead_units")  # the step it was found at
    assert json.loads(event["message"]) == {
        "severity": "warning",
        "step": 3,
        "layers": ["1"],
        "summary": "80% of the units in 1 are dead",
    }


def test_a_callback_that_raises_is_recorded_and_training_goes_on(tmp_path):
    bare, _ = _train()
    found = [Found("spike", "warning", "the loss jumped"), Found("lr_too_high", "warning", "lr too high")]
    engine = Scripted({4: found[:1], 9: found[1:]})

    def broken(finding):
        raise KeyError(f"no dashboard for {finding.rule}")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model, _ = _train(tmp_path / "run.h5", probes=[GradStats()], live=5, engine=engine, on_finding=broken)
    _same_weights(bare, model)
    assert len([w for w in caught if w.category is CallbackFailureWarning]) == 1  # warned once
    events = gradlens.load(tmp_path / "run.h5").events()
    errors = events[events.kind == "callback_error"]
    assert list(errors.step) == [4, 9] and set(errors.source) == {"on_finding"}
    assert errors.message.iloc[0] == "KeyError: 'no dashboard for spike'"


def test_an_engine_that_fails_is_switched_off_and_training_goes_on(tmp_path):
    bare, _ = _train(steps=20)
    engine = Scripted(fail_at={1, 3, 5})
    with pytest.warns(CallbackFailureWarning, match="live doctor failed at step 2.*ZeroDivisionError: rule bug at 1"):
        model, session = _train(tmp_path / "run.h5", steps=20, probes=[GradStats()], live=2, engine=engine)
    _same_weights(bare, model)
    assert engine.checks == [1, 3, 5]  # switched off after three failures in a row
    events = gradlens.load(tmp_path / "run.h5").events()
    assert list(events[events.kind == "doctor_error"].message)[-1] == "switched off after 3 failures in a row"


def test_stop_on_severe_ends_the_with_block_cleanly_with_status_stopped(tmp_path):
    severe = Found("nonfinite", "severe", "the loss is NaN", step=6)
    engine = Scripted({4: [Found("spike", "warning", "a spike")], 9: [severe]})
    reference, _ = _train(steps=10)  # the stopped run has taken exactly 10 steps
    with pytest.warns(FindingWarning):
        model, session = _train(
            tmp_path / "run.h5", steps=50, probes=[GradStats()], live=5, engine=engine, stop_on="severe"
        )
    _same_weights(reference, model)
    assert session.step == 10 and session.stop_reason is severe
    run = gradlens.load(tmp_path / "run.h5")
    assert run.status == "stopped"
    stopped = run.events()[run.events().kind == "stopped"]
    assert list(stopped.step) == [9] and list(stopped.source) == ["nonfinite"]
    assert list(stopped.message) == ["stop_on='severe': the loss is NaN"]
    assert sorted(run.frame("grad_stats").step.unique())[-1] == 9


def test_training_stopped_without_a_with_block_reaches_the_caller(tmp_path):
    model = _net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    engine = Scripted({2: [Found("dead_layer", "severe", "layer 0 is dead")]})
    session = gradlens.attach(model, optimizer, tmp_path / "run.h5", live=3, engine=engine, stop_on="severe")
    with pytest.warns(FindingWarning), pytest.raises(TrainingStopped, match="severe finding \\(dead_layer\\)"):
        for step in range(10):
            model(_batch(step)[0]).sum().backward()
            optimizer.step()
    session.close()
    assert gradlens.load(tmp_path / "run.h5").status == "stopped"


def test_stop_via_a_framework_handler_does_not_raise(tmp_path):
    engine = Scripted({4: [Found("dead_layer", "severe", "layer 0 is dead")]})
    model = _net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    asked = []
    with pytest.warns(FindingWarning):
        with gradlens.attach(model, optimizer, tmp_path / "run.h5", live=5, engine=engine, stop_on="severe") as s:
            s.stop_via(asked.append)
            for step in range(8):  # the framework finishes its batch and stops on its own
                model(_batch(step)[0]).sum().backward()
                optimizer.step()
    assert [f.rule for f in asked] == ["dead_layer"]
    assert gradlens.load(tmp_path / "run.h5").status == "stopped"


def test_a_trigger_switches_detail_probes_on_and_writes_the_flight_recorder(tmp_path):
    engine = Scripted({9: [Found("spike", "warning", "the loss jumped", step=9)]})
    grads = []
    with pytest.warns(FindingWarning):
        _train(
            tmp_path / "run.h5",
            steps=20,
            grads=grads,
            live=5,
            engine=engine,
            detail_steps=4,
            flight_steps=3,
            probes=[GradStats(every=100), ActivationStats(every=100, name="acts")],
        )
    run = gradlens.load(tmp_path / "run.h5")
    steps = list(run.array("grad_stats", "norm")[0])
    # 0: scheduled; 7, 8, 9: the flight recorder (3 steps) written at the trigger; 10..13: the detail window;
    # 17..19: the flight recorder again, written when the run closed
    assert steps == [0, 7, 8, 9, 10, 11, 12, 13, 17, 18, 19]
    _, norms, _, labels = run.array("grad_stats", "norm")
    for row, step in enumerate(steps):
        expected = [float(grads[step][name].double().norm()) for name in labels["layer"]]
        assert norms[row] == pytest.approx(expected, rel=1e-6), step
    assert list(run.array("acts", "dead_fraction")[0]) == [0, 10, 11, 12, 13]  # no flight ring for activations
    events = run.events()
    detail = events[events.kind == "detail"]
    assert list(detail.step) == [10]
    assert detail.message.iloc[0] == "acts, grad_stats at every step 10..13: warning finding spike: the loss jumped"
    flight = events[events.kind == "flight_recorder"]
    assert list(flight.source) == ["grad_stats"] * 2 and list(flight.step) == [10, 20]
    assert list(flight.message) == [
        "steps 7..9 written: warning finding spike: the loss jumped",
        "steps 17..19 written: the run closed",
    ]
    # the engine was fed the flight records too, in order
    assert [r[0] for r in engine.records if r[1] == "grad_stats"][:4] == [0, 7, 8, 9]


def test_the_flight_recorder_is_written_when_the_run_fails(tmp_path):
    with pytest.raises(RuntimeError, match="data loader died"):
        _train(tmp_path / "run.h5", steps=20, crash_at=7, flight_steps=4, probes=[GradStats(every=5)])
    run = gradlens.load(tmp_path / "run.h5")
    assert run.status == "failed"
    assert list(run.array("grad_stats", "norm")[0]) == [0, 5, 6]  # the ring restarted at step 5's record
    flight = run.events()[run.events().kind == "flight_recorder"]
    assert flight.message.iloc[0] == "steps 6..6 written: the run failed"


def test_a_non_finite_logged_scalar_is_a_trigger_at_once(tmp_path):
    model = _net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with gradlens.attach(
        model, optimizer, tmp_path / "run.h5", probes=[GradStats(every=100)], detail_steps=2, flight_steps=2
    ) as session:
        for step in range(6):
            model(_batch(step)[0]).sum().backward()
            optimizer.step()
            session.log(loss=float("nan") if step == 3 else 1.0)
    run = gradlens.load(tmp_path / "run.h5")
    # logged after step 3: the flight ring holds steps 2 and 3; the detail window is steps 4 and 5
    assert list(run.array("grad_stats", "norm")[0]) == [0, 2, 3, 4, 5]
    detail = run.events()[run.events().kind == "detail"]
    assert detail.message.iloc[0] == "grad_stats at every step 4..5: non-finite scalar 'loss' = nan at step 3"


def test_skipped_steps_stay_free_without_live_doctor_or_flight_recorder(tmp_path, monkeypatch):
    model = _net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    session = gradlens.attach(model, optimizer, tmp_path / "run.h5", probes=[GradStats(every=[0])], live=None)
    fired = []
    original = session._fire
    monkeypatch.setattr(session, "_fire", lambda: (fired.append(session.step), original())[1])
    for step in range(6):
        model(_batch(step)[0]).sum().backward()
        optimizer.step()
    session.close()
    assert fired == [0]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"stop_on": "severe"}, "stop_on needs the live doctor"),
        ({"live": 5, "stop_on": "warning"}, "stop_on must be one of"),
        ({"live": 0}, "live must be a number of steps >= 1"),
        ({"live": True}, "live must be a number of steps >= 1"),
        ({"detail": ["nope"]}, r"detail names probes \['nope'\] that are not attached"),
        ({"flight_steps": -1}, "flight_steps must be a number of steps >= 0"),
        ({"live": 5, "on_finding": "print"}, "on_finding must be callable"),
    ],
)
def test_live_settings_are_checked_at_attach(tmp_path, kwargs, message):
    model = _net()
    with pytest.raises(ValueError, match=message):
        gradlens.attach(
            model, torch.optim.SGD(model.parameters(), lr=0.1), tmp_path / "run.h5", probes=[GradStats()], **kwargs
        )
    assert not (tmp_path / "run.h5").exists()


def test_stop_on_ends_a_lightning_fit_through_trainer_should_stop(tmp_path):
    pl = pytest.importorskip("lightning.pytorch")
    from gradlens.integrations.lightning import GradlensCallback

    x = torch.cat([_batch(step)[0] for step in range(20)])
    y = torch.cat([_batch(step)[1] for step in range(20)])
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8)
    engine = Scripted({4: [Found("dead_layer", "severe", "layer 0 is dead")]})
    callback = GradlensCallback(tmp_path / "run.h5", probes=[GradStats()], live=5, engine=engine, stop_on="severe")
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[callback],
    )
    with pytest.warns(FindingWarning):
        trainer.fit(lightning_classifier(_net()), loader)  # no exception reaches the caller
    assert trainer.global_step == 5  # the fit stopped after the step whose check found it
    run = gradlens.load(tmp_path / "run.h5")
    assert run.status == "stopped"
    assert list(run.events()[run.events().kind == "stopped"].source) == ["dead_layer"]


def test_stop_on_ends_a_hugging_face_training_through_its_control(tmp_path):
    transformers = pytest.importorskip("transformers")
    from gradlens.integrations.transformers import GradlensCallback

    class Rows(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 160

        def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
            x, y = _batch(index // 8)
            return {"x": x[index % 8], "labels": y[index % 8]}

    class Classifier(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = _net()

        def forward(self, x, labels=None):
            logits = self.net(x)
            return {"loss": nn.functional.cross_entropy(logits, labels), "logits": logits}

    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=8,
        max_steps=20,
        logging_steps=1,
        report_to="none",
        use_cpu=True,
        save_strategy="no",
        disable_tqdm=True,
    )
    engine = Scripted({4: [Found("dead_layer", "severe", "layer 0 is dead")]})
    callback = GradlensCallback(tmp_path / "run.h5", probes=[GradStats()], live=5, engine=engine, stop_on="severe")
    trainer = transformers.Trainer(model=Classifier(), args=args, train_dataset=Rows(), callbacks=[callback])
    with pytest.warns(FindingWarning):
        trainer.train()
    assert trainer.state.global_step == 4  # the Trainer numbers its steps from 1: its 4th update found it
    run = gradlens.load(tmp_path / "run.h5")
    assert run.status == "stopped"
    assert sorted(run.frame("grad_stats").step.unique()) == [1, 2, 3, 4]


def test_a_trigger_between_forward_and_step_starts_activations_at_the_next_step(tmp_path):
    """A NaN loss logged before optimizer.step() opens the detail window at this step; the activation probe was
    not hooked for this step's forward, so it starts at the next one instead of failing."""
    model = _net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no ProbeFailureWarning
        with gradlens.attach(
            model, optimizer, tmp_path / "run.h5", probes=[ActivationStats(every=100)], detail_steps=2
        ) as session:
            for step in range(5):
                loss = model(_batch(step)[0]).sum()
                loss.backward()
                session.log(loss=float("inf") if step == 2 else loss.item())  # before the step
                optimizer.step()
    run = gradlens.load(tmp_path / "run.h5")
    assert list(run.array("activation_stats", "dead_fraction")[0]) == [0, 3]  # window 2..3; step 2 not hooked
    assert (run.events().kind == "probe_error").sum() == 0
