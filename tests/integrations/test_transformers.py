"""GradlensCallback in a real Hugging Face Trainer on a tiny randomly initialised BERT, against a plain loop."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

import gradlens  # noqa: E402
from gradlens.integrations.transformers import GradlensCallback  # noqa: E402
from gradlens.probes import GradStats  # noqa: E402
from tests.distributed.reference import assert_stats_close, grad_stats_by_hand, recorded  # noqa: E402
from tests.tiny_models import tiny_bert as _tiny_bert  # noqa: E402

SAMPLES, BATCH, STEPS, TOKENS, LR = 24, 4, 3, 12, 1e-3


def tiny_bert():
    return _tiny_bert(dropout=0.0)


def dataset() -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(3)
    ids = torch.randint(1, 100, (SAMPLES, TOKENS), generator=generator)
    labels = torch.randint(0, 3, (SAMPLES,), generator=generator)
    return [
        {"input_ids": ids[i], "attention_mask": torch.ones(TOKENS, dtype=torch.long), "labels": labels[i]}
        for i in range(SAMPLES)
    ]


def arguments(tmp_path, **kwargs) -> transformers.TrainingArguments:
    options = dict(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=BATCH,
        max_steps=STEPS,
        learning_rate=LR,
        logging_steps=1,
        report_to="none",
        use_cpu=True,
        save_strategy="no",
        seed=0,
        train_sampling_strategy="sequential",
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    options.update(kwargs)
    return transformers.TrainingArguments(**options)


def plain_loop() -> tuple[list[dict], list[float], list[float]]:
    """AdamW + linear decay + clipping at 1.0, as the Trainer does by default, written out by hand."""
    model = tiny_bert()
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.0)
    schedule = transformers.get_linear_schedule_with_warmup(optimizer, 0, STEPS)
    rows = dataset()
    stats, losses, rates = [], [], []
    for step in range(STEPS):
        batch = {k: torch.stack([r[k] for r in rows[step * BATCH : (step + 1) * BATCH]]) for k in rows[0]}
        optimizer.zero_grad()
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        stats.append(grad_stats_by_hand({n: p.grad for n, p in model.named_parameters() if p.grad is not None}))
        losses.append(loss.item())
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    return stats, losses, rates


def test_callback_records_what_a_plain_loop_computes(tmp_path):
    path = tmp_path / "run.h5"
    callback = GradlensCallback(path, probes=[GradStats()])
    trainer = transformers.Trainer(
        model=tiny_bert(), args=arguments(tmp_path), train_dataset=dataset(), callbacks=[callback]
    )
    trainer.train()

    run = gradlens.load(path)
    assert run.status == "finished"
    expected_stats, expected_loss, expected_lr = plain_loop()
    got = recorded(run.frame("grad_stats"))
    # the Trainer's numbering: its k-th update is step k (state.global_step after it), gradients included
    assert sorted(got) == list(range(1, STEPS + 1))
    for k in range(1, STEPS + 1):
        # the pooler and classifier get gradients; every parameter of this BERT is trainable
        present = {name: stats for name, stats in got[k].items() if name in expected_stats[k - 1]}
        assert len(present) == len(got[k]) == len(expected_stats[k - 1])
        assert_stats_close(present, expected_stats[k - 1], rtol=2e-5, atol=1e-10, where=f"step {k}")
    scalars = run.scalars()
    loss, lr = scalars[scalars.name == "loss"], scalars[scalars.name == "lr"]
    history = [entry["step"] for entry in trainer.state.log_history if "loss" in entry]
    assert loss.step.tolist() == lr.step.tolist() == history == list(range(1, STEPS + 1))
    assert loss.value.tolist() == pytest.approx(expected_loss, rel=1e-5)
    assert lr.value.tolist() == pytest.approx(expected_lr, rel=1e-12)  # 1e-3, 6.67e-4, 3.33e-4
    assert "grad_norm" in set(scalars.name)
    assert run.meta["config"]["transformers"]["logging_steps"] == 1


def test_context_manager_closes_a_failed_run(tmp_path):
    path = tmp_path / "run.h5"

    class Boom(transformers.TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 2:
                raise RuntimeError("disk quota exceeded")

    callback = GradlensCallback(path, probes=[GradStats()])
    trainer = transformers.Trainer(
        model=tiny_bert(), args=arguments(tmp_path), train_dataset=dataset(), callbacks=[callback, Boom()]
    )
    with pytest.raises(RuntimeError, match="disk quota exceeded"), callback:
        trainer.train()
    run = gradlens.load(path)
    assert run.status == "failed"
    assert sorted(recorded(run.frame("grad_stats"))) == [1, 2]  # the two updates before the failure


def test_accelerate_grad_scaler_skipped_steps_are_recorded(tmp_path):
    """``fp16=True`` needs a GPU; on the CPU the same objects the Trainer hands to callbacks stand in for it:
    accelerate's AcceleratedOptimizer holding a GradScaler, stepped as the Trainer steps it."""
    import accelerate
    from accelerate.optimizer import AcceleratedOptimizer
    from torch import nn

    args, state, control = arguments(tmp_path), transformers.TrainerState(), transformers.TrainerControl()
    accelerate.Accelerator(cpu=True)  # after TrainingArguments, which resets accelerate's state
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**22)
    optimizer = AcceleratedOptimizer(
        torch.optim.SGD(model.parameters(), lr=0.01), device_placement=False, scaler=scaler
    )
    callback = GradlensCallback(tmp_path / "amp.h5", probes=[GradStats()])
    callback.on_train_begin(args, state, control, model=model, optimizer=optimizer)
    skipped = []
    generator = torch.Generator().manual_seed(1)
    for _ in range(8):
        optimizer.zero_grad()
        with torch.autocast("cpu", dtype=torch.float16):
            loss = nn.functional.cross_entropy(
                model(torch.randn(8, 4, generator=generator)), torch.randint(0, 3, (8,), generator=generator)
            )
        scaler.scale(loss).backward()
        optimizer.step()  # AcceleratedOptimizer.step: scaler.step(inner optimizer), scaler.update()
        state.global_step += 1  # as the Trainer counts its updates, skipped ones included
        skipped.append(optimizer.step_was_skipped)
        callback.on_log(args, state, control, logs={"loss": loss.item(), "learning_rate": 0.01})
    callback.on_train_end(args, state, control)

    assert any(skipped) and not all(skipped)
    run = gradlens.load(tmp_path / "amp.h5")
    events = run.events()
    assert events[events.kind == "step_skipped"].step.tolist() == [i + 1 for i, s in enumerate(skipped) if s]
    nonfinite = run.frame("grad_stats").query("quantity == 'nonfinite'").groupby("step").value.sum()
    assert [bool(v > 0) for v in nonfinite] == skipped and nonfinite.index.tolist() == list(range(1, 9))
    assert run.scalars().query("name == 'loss'").step.tolist() == list(range(1, 9))
    assert "step" not in vars(scaler)


def test_every_scalar_of_the_log_history_is_recorded_at_its_step(tmp_path):
    """Train and eval logs and the final summary, with accumulation: each numeric entry of the Trainer's own
    ``log_history`` is in the file at the entry's step (``learning_rate`` as ``lr``), and nothing else is."""
    path = tmp_path / "run.h5"
    callback = GradlensCallback(path, probes=[GradStats()])
    args = arguments(tmp_path, max_steps=4, gradient_accumulation_steps=2, eval_strategy="steps", eval_steps=2)
    trainer = transformers.Trainer(
        model=tiny_bert(), args=args, train_dataset=dataset(), eval_dataset=dataset()[:8], callbacks=[callback]
    )
    trainer.train()

    run = gradlens.load(path)
    expected = set()
    for entry in trainer.state.log_history:
        for key, value in entry.items():
            if key != "step" and isinstance(value, int | float) and not isinstance(value, bool):
                expected.add((entry["step"], "lr" if key == "learning_rate" else key, float(value)))
    scalars = run.scalars()
    got = {(int(s), n, float(v)) for s, n, v in zip(scalars.step, scalars.name, scalars.value, strict=True)}
    clipped = {(s, v) for s, n, v in got if n == "clip/preclip_norm"}  # the session's own clip capture
    assert clipped == {(s, v) for s, n, v in expected if n == "grad_norm"}
    got = {row for row in got if not row[1].startswith("clip/")}
    assert got == expected
    names = {name for _, name, _ in got}
    assert {"loss", "lr", "grad_norm", "eval_loss", "epoch", "train_loss"} <= names
    assert sorted(s for s, n, _ in got if n == "eval_loss") == [2, 4]
    assert sorted(recorded(run.frame("grad_stats"))) == [1, 2, 3, 4]  # one record per update, 2 micro-batches
    config = run.meta["config"]
    assert config["accumulation_steps"] == 2
    assert config["clipping"] == {"max_norm": 1.0, "norm_type": 2.0, "algorithm": "norm", "source": "transformers"}


@pytest.mark.parametrize("max_grad_norm", [0.0, None])
def test_no_clipping_is_said_in_the_metadata(tmp_path, max_grad_norm):
    args, state, control = arguments(tmp_path, max_grad_norm=max_grad_norm), transformers.TrainerState(), None
    model = torch.nn.Linear(3, 2)
    callback = GradlensCallback(tmp_path / "run.h5", probes=[GradStats()])
    callback.on_train_begin(args, state, control, model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    callback.close()
    config = gradlens.load(tmp_path / "run.h5").meta["config"]
    assert config["clipping"] == {"max_norm": None, "norm_type": 2.0, "algorithm": None, "source": "transformers"}
    assert config["accumulation_steps"] == 1


def test_a_resumed_training_goes_on_with_the_trainer_step_numbers(tmp_path):
    first = transformers.Trainer(
        model=tiny_bert(),
        args=arguments(tmp_path, max_steps=4, save_strategy="steps", save_steps=2),
        train_dataset=dataset(),
        callbacks=[GradlensCallback(tmp_path / "first.h5", probes=[GradStats()])],
    )
    first.train()
    callback = GradlensCallback(tmp_path / "second.h5", probes=[GradStats()])
    second = transformers.Trainer(
        model=tiny_bert(), args=arguments(tmp_path, max_steps=4), train_dataset=dataset(), callbacks=[callback]
    )
    second.train(resume_from_checkpoint=str(tmp_path / "out" / "checkpoint-2"))
    run = gradlens.load(tmp_path / "second.h5")
    assert sorted(recorded(run.frame("grad_stats"))) == [3, 4]
    assert run.scalars().query("name == 'loss'").step.tolist() == [3, 4]
    assert run.meta["config"]["transformers"]["global_step_at_start"] == 2


def test_a_meta_key_of_the_callback_is_refused(tmp_path):
    args, state = arguments(tmp_path), transformers.TrainerState()
    model = torch.nn.Linear(3, 2)
    callback = GradlensCallback(tmp_path / "run.h5", probes=[GradStats()], meta={"clipping": "mine"})
    with pytest.raises(ValueError, match=r"meta keys \['clipping'\] are written by the transformers callback"):
        callback.on_train_begin(args, state, None, model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    assert not (tmp_path / "run.h5").exists()


def test_a_logged_number_the_file_cannot_hold_is_named_and_the_rest_recorded(tmp_path):
    args, state = arguments(tmp_path), transformers.TrainerState()
    model = torch.nn.Linear(3, 2)
    callback = GradlensCallback(tmp_path / "run.h5", probes=[GradStats()])
    callback.on_train_begin(args, state, None, model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    long_name = "eval_" + "x" * 70
    state.global_step = 5
    logs = {"eval_loss": 0.5, long_name: 1.0, "step": 5, "note": "not a number", "flag": True}
    callback.on_log(args, state, None, logs=logs)
    callback.on_log(args, state, None, logs=logs)  # refused again: said once
    callback.close()
    run = gradlens.load(tmp_path / "run.h5")
    assert run.scalars().query("name == 'eval_loss'").step.tolist() == [5, 5]
    messages = run.events().query("kind == 'warning'").message.tolist()
    assert len(messages) == 2
    assert messages[0].startswith(f"logged metric {long_name!r} is not recorded: scalar name")
    assert messages[1].startswith("logged metric 'step' is not recorded")
