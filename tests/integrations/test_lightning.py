"""GradlensCallback in a real lightning.pytorch.Trainer (CPU), checked against a plain PyTorch loop."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import nn

pl = pytest.importorskip("lightning.pytorch")

import gradlens  # noqa: E402
from gradlens.integrations.lightning import GradlensCallback  # noqa: E402
from gradlens.probes import GradStats  # noqa: E402
from tests.distributed.reference import assert_stats_close, grad_stats_by_hand, recorded  # noqa: E402

SAMPLES, BATCH, ACCUMULATE = 32, 4, 2
STEPS = SAMPLES // (BATCH * ACCUMULATE)


def data() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(7)
    return torch.randn(SAMPLES, 6, generator=generator, dtype=torch.float64), torch.randint(
        0, 3, (SAMPLES,), generator=generator
    )


def make_net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3)).double()


def optimizer_and_schedule(parameters):
    optimizer = torch.optim.SGD(parameters, lr=0.1, momentum=0.9)
    return optimizer, torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)


class Tiny(pl.LightningModule):
    def __init__(self, fail_at: int | None = None) -> None:
        super().__init__()
        self.net = make_net()
        self.fail_at = fail_at

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        if batch_idx == self.fail_at:
            raise RuntimeError("data loader produced garbage")
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def configure_optimizers(self):
        optimizer, schedule = optimizer_and_schedule(self.parameters())
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def trainer(callback: GradlensCallback, **kwargs) -> pl.Trainer:
    options = dict(
        accelerator="cpu",
        devices=1,
        max_epochs=1,
        accumulate_grad_batches=ACCUMULATE,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[callback],
    )
    options.update(kwargs)
    return pl.Trainer(**options)


def loader():
    x, y = data()
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=BATCH, shuffle=False)


def plain_loop() -> tuple[list[dict], list[float], list[float]]:
    """The same training written by hand: per step, the gradient statistics, loss and learning rate."""
    net = make_net()
    optimizer, schedule = optimizer_and_schedule(net.parameters())
    x, y = data()
    stats, losses, rates = [], [], []
    for step in range(STEPS):
        optimizer.zero_grad()
        total = 0.0
        for micro in range(ACCUMULATE):
            part = slice((step * ACCUMULATE + micro) * BATCH, (step * ACCUMULATE + micro + 1) * BATCH)
            loss = nn.functional.cross_entropy(net(x[part]), y[part]) / ACCUMULATE
            loss.backward()
            total += loss.item()
        stats.append(grad_stats_by_hand({f"net.{n}": p.grad for n, p in net.named_parameters()}))
        losses.append(total)
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    return stats, losses, rates


def test_callback_records_what_a_plain_loop_computes(tmp_path):
    path = tmp_path / "run.h5"
    callback = GradlensCallback(path, probes=[GradStats()])
    trainer(callback).fit(Tiny(), loader())

    run = gradlens.load(path)
    assert run.status == "finished"
    expected_stats, expected_loss, expected_lr = plain_loop()
    got = recorded(run.frame("grad_stats"))
    assert sorted(got) == list(range(STEPS))
    for step in range(STEPS):
        # GradStats stores its float64-accumulated statistics as float32 (schema 3): relative 6e-8
        assert_stats_close(got[step], expected_stats[step], rtol=1e-7, where=f"step {step}")
    scalars = run.scalars()
    loss = scalars[scalars.name == "loss"]
    lr = scalars[scalars.name == "lr"]
    assert loss.step.tolist() == list(range(STEPS)) and lr.step.tolist() == list(range(STEPS))
    assert loss.value.tolist() == pytest.approx(expected_loss, rel=1e-12)
    assert lr.value.tolist() == pytest.approx(expected_lr, rel=0)  # 0.1, 0.05, 0.025, 0.0125
    assert run.meta["config"]["lightning"]["accumulate_grad_batches"] == ACCUMULATE


def test_an_exception_closes_the_file_as_failed(tmp_path):
    path = tmp_path / "run.h5"
    callback = GradlensCallback(path, probes=[GradStats()])
    with pytest.raises(RuntimeError, match="data loader produced garbage"):
        trainer(callback).fit(Tiny(fail_at=5), loader())  # batches 0-3 make steps 0 and 1
    run = gradlens.load(path)
    assert run.status == "failed"
    assert sorted(recorded(run.frame("grad_stats"))) == [0, 1]
    assert callback.session is not None and callback.session._closed


def test_two_optimizers_are_refused(tmp_path):
    class TwoOptimizers(Tiny):
        def __init__(self) -> None:
            super().__init__()
            self.automatic_optimization = False

        def configure_optimizers(self):
            return [
                torch.optim.SGD(self.net[0].parameters(), lr=0.1),
                torch.optim.SGD(self.net[2].parameters(), lr=0.1),
            ]

        def training_step(self, batch, batch_idx):
            return None

    with pytest.raises(ValueError, match="observes one optimizer, but TwoOptimizers.configure_optimizers returned 2"):
        callback = GradlensCallback(tmp_path / "run.h5", probes=[GradStats()])
        trainer(callback, accumulate_grad_batches=1).fit(TwoOptimizers(), loader())
    assert not (tmp_path / "run.h5").exists()


def test_ddp_strategy_writes_one_file_equal_to_the_global_batch(tmp_path):
    from tests.distributed.harness import check, run_ranks
    from tests.integrations import lightning_ddp

    path = tmp_path / "ddp.h5"
    rank0, rank1 = check(run_ranks(lightning_ddp.fit, 2, str(path), deadline=120))
    assert (rank0["global_rank"], rank1["global_rank"]) == (0, 1)
    assert rank0["recorder"] == "Recorder" and rank1["recorder"] == "NullRecorder"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp.h5"]

    run = gradlens.load(path)
    assert run.status == "finished"
    assert run.meta["distributed"] == {"world_size": 2, "backend": "gloo", "writer_rank": 0, "mode": "ddp"}
    grads, losses = lightning_ddp.plain_loop(2)
    got = recorded(run.frame("grad_stats"))
    assert sorted(got) == list(range(len(grads)))
    for step, named in enumerate(grads):
        # GradStats stores its float64-accumulated statistics as float32 (schema 3): relative 6e-8
        assert_stats_close(got[step], grad_stats_by_hand(named), rtol=1e-7, where=f"step {step}")
    loss = run.scalars().query("name == 'loss'")
    # the logged loss is averaged over ranks: the global batch's mean loss
    assert loss.value.tolist() == pytest.approx(losses, rel=1e-12)


def test_fsdp1_strategy_is_refused(tmp_path):
    # FSDPStrategy needs an accelerator to run; the refusal happens before it would matter
    fake = type("FakeTrainer", (), {"strategy": pl.strategies.FSDPStrategy(), "optimizers": []})()
    callback = GradlensCallback(tmp_path / "run.h5", probes=[GradStats()])
    with pytest.raises(ValueError, match="cannot read gradients under Lightning's FSDPStrategy"):
        callback.on_fit_start(fake, Tiny())
    assert not (tmp_path / "run.h5").exists()


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before `optimizer.step\\(\\)`")
def test_fp16_grad_scaler_skipped_steps_are_recorded(tmp_path):
    from lightning.pytorch.plugins import MixedPrecision

    class Float32Tiny(Tiny):
        def __init__(self) -> None:
            super().__init__()
            self.net = self.net.float()

        def training_step(self, batch, batch_idx):
            x, y = batch
            return nn.functional.cross_entropy(self(x.float()), y)

    # fp16 autocast on the CPU with an explicit GradScaler (Lightning's own "16-mixed" becomes bf16 on the CPU);
    # a loss scale of 2**24 overflows fp16 at first, and each skipped step halves it
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**24)
    path = tmp_path / "amp.h5"
    callback = GradlensCallback(path, probes=[GradStats()])
    plugin = MixedPrecision("16-mixed", "cpu", scaler=scaler)
    trainer(callback, accumulate_grad_batches=1, plugins=[plugin]).fit(Float32Tiny(), loader())

    skips = round(math.log2(2.0**24 / scaler.get_scale()))  # no growth within 2000 steps: halvings = skips
    assert 0 < skips < SAMPLES // BATCH
    run = gradlens.load(path)
    events = run.events()
    skipped = events[events.kind == "step_skipped"]
    assert skipped.step.tolist() == list(range(skips)) and set(skipped.source) == {"GradScaler"}
    nonfinite = run.frame("grad_stats").query("quantity == 'nonfinite'").groupby("step").value.sum()
    assert (nonfinite.loc[: skips - 1] > 0).all() and (nonfinite.loc[skips:] == 0).all()
    assert len(nonfinite) == SAMPLES // BATCH  # every step recorded, the skipped ones included
    assert "step" not in vars(scaler)  # the watch on scaler.step was removed at fit end


def test_layers_are_discovered_when_training_step_calls_submodules(tmp_path):
    class Direct(Tiny):
        def training_step(self, batch, batch_idx):  # never calls self(x): the module's own forward never runs
            x, y = batch
            return nn.functional.cross_entropy(self.net[2](self.net[1](self.net[0](x))), y)

    path = tmp_path / "run.h5"
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="gradlens")
        trainer(GradlensCallback(path, probes=[GradStats(params="weights")])).fit(Direct(), loader())
    run = gradlens.load(path)
    assert run.layers.name.tolist() == ["net.0", "net.2"]
    assert sorted(recorded(run.frame("grad_stats"))) == list(range(STEPS))


# ------------------------------------------------------------------------------ what Lightning logged (23.6)


class Logging(Tiny):
    """Logs as Lightning users do: step and epoch metrics in training, epoch metrics in validation, and a
    name ("loss") the callback records itself."""

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        loss = nn.functional.cross_entropy(logits, y)
        self.log("train_loss", loss, on_step=True, on_epoch=True)
        self.log("train_acc", (logits.argmax(1) == y).double().mean())
        self.log("loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", nn.functional.cross_entropy(self(x), y))


def lightning_csv(folder) -> list[tuple[int, str, float]]:
    """Every (step, name, value) Lightning's own CSVLogger wrote."""
    import csv

    (path,) = folder.rglob("metrics.csv")
    rows = []
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            step = int(row.pop("step"))
            rows += [(step, name, float(value)) for name, value in row.items() if value != ""]
    return rows


def test_self_log_metrics_are_recorded_at_lightning_steps_with_lightning_names(tmp_path):
    from lightning.pytorch.loggers import CSVLogger

    path = tmp_path / "run.h5"
    callback = GradlensCallback(path, probes=[GradStats()])
    csv_logger = CSVLogger(tmp_path / "csv")
    fit = trainer(callback, logger=csv_logger, log_every_n_steps=1, max_epochs=2, limit_val_batches=2)
    fit.fit(Logging(), loader(), loader())
    assert fit.loggers == [csv_logger]  # the trainer is left with the user's loggers

    run = gradlens.load(path)
    logged = lightning_csv(tmp_path / "csv")
    renamed = {"loss": "lightning/loss"}  # a name the callback records itself keeps Lightning's value apart
    scalars = run.scalars()
    got = {(int(s), n, v) for s, n, v in zip(scalars.step, scalars.name, scalars.value, strict=True)}
    for step, name, value in logged:
        matches = [v for s, n, v in got if s == step and n == renamed.get(name, name)]
        assert matches == [pytest.approx(value, rel=1e-12)], (step, name)
    names = {n for _, n, _ in got}
    assert names == {renamed.get(n, n) for _, n, _ in logged} | {"loss", "lr"}
    assert {"train_loss_step", "train_loss_epoch", "train_acc", "val_loss", "epoch"} <= names
    # Lightning's steps are gradlens steps: the metrics of optimizer step s sit beside its gradients
    steps = 2 * STEPS
    assert sorted(recorded(run.frame("grad_stats"))) == list(range(steps))
    at = {name: sorted(int(s) for s in scalars[scalars.name == name].step) for name in names}
    assert at["train_loss_step"] == at["loss"] == list(range(steps))
    assert at["val_loss"] == at["train_loss_epoch"] == [STEPS - 1, steps - 1]  # the last step of each epoch
    assert run.events().query("kind == 'warning'").empty


def test_without_a_lightning_logger_the_file_says_that_no_self_log_metric_is_recorded(tmp_path):
    path = tmp_path / "run.h5"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Lightning warns that self.log has no logger
        trainer(GradlensCallback(path, probes=[GradStats()])).fit(Logging(), loader())
    run = gradlens.load(path)
    assert set(run.scalars().name) == {"loss", "lr"}
    (message,) = run.events().query("kind == 'warning' and source == 'lightning'").message
    assert message.startswith("Trainer(logger=False) sends self.log metrics to no logger: none are recorded")


@pytest.mark.parametrize(
    ("options", "clipping"),
    [
        ({}, {"max_norm": None, "norm_type": 2.0, "algorithm": None, "source": "lightning"}),
        ({"gradient_clip_val": 0.5}, {"max_norm": 0.5, "norm_type": 2.0, "algorithm": "norm", "source": "lightning"}),
        (
            {"gradient_clip_val": 0.01, "gradient_clip_algorithm": "value"},
            {"max_norm": 0.01, "norm_type": 2.0, "algorithm": "value", "source": "lightning"},
        ),
        ({"gradient_clip_val": 0}, {"max_norm": None, "norm_type": 2.0, "algorithm": None, "source": "lightning"}),
    ],
)
def test_clip_settings_and_accumulation_are_in_the_metadata(tmp_path, options, clipping):
    path = tmp_path / "run.h5"
    trainer(GradlensCallback(path, probes=[GradStats()]), **options).fit(Tiny(), loader())
    config = gradlens.load(path).meta["config"]
    assert config["clipping"] == clipping
    assert config["accumulation_steps"] == ACCUMULATE and isinstance(config["accumulation_steps"], int)


def test_a_resumed_fit_continues_lightning_step_numbers(tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    callback = GradlensCallback(tmp_path / "first.h5", probes=[GradStats()])
    first = trainer(callback, enable_checkpointing=True, callbacks=[callback, ModelCheckpoint(tmp_path / "ck")])
    first.fit(Logging(), loader())
    (checkpoint,) = (tmp_path / "ck").glob("*.ckpt")
    second = trainer(
        GradlensCallback(tmp_path / "second.h5", probes=[GradStats()]),
        max_epochs=2,
        logger=CSVLogger(tmp_path / "csv"),
        log_every_n_steps=1,
    )
    second.fit(Logging(), loader(), ckpt_path=checkpoint)
    run = gradlens.load(tmp_path / "second.h5")
    assert sorted(recorded(run.frame("grad_stats"))) == list(range(STEPS, 2 * STEPS))
    csv_steps = sorted({s for s, name, _ in lightning_csv(tmp_path / "csv") if name == "train_loss_step"})
    assert csv_steps == sorted(run.scalars().query("name == 'train_loss_step'").step) == list(range(STEPS, 2 * STEPS))


def test_a_metric_the_file_cannot_hold_is_named_in_an_event_and_the_others_are_recorded(tmp_path):
    from lightning.pytorch.loggers import CSVLogger

    long_name = "a_metric_name_" + "x" * 60  # over the recorder's 64 bytes

    class LongName(Logging):
        def training_step(self, batch, batch_idx):
            self.log(long_name, 1.0)
            return super().training_step(batch, batch_idx)

    path = tmp_path / "run.h5"
    fit = trainer(GradlensCallback(path, probes=[GradStats()]), logger=CSVLogger(tmp_path / "csv"), log_every_n_steps=1)
    fit.fit(LongName(), loader())
    run = gradlens.load(path)
    assert run.status == "finished" and long_name not in set(run.scalars().name)
    assert run.scalars().query("name == 'train_acc'").step.tolist() == list(range(STEPS))
    (message,) = run.events().query("kind == 'warning'").message
    assert message.startswith(f"logged metric {long_name!r} is not recorded: scalar name")


def test_the_callback_logger_alone_records_what_lightning_logs(tmp_path):
    path = tmp_path / "run.h5"
    callback = GradlensCallback(path, probes=[GradStats()])
    fit = trainer(callback, logger=callback.logger, log_every_n_steps=1, max_epochs=2, limit_val_batches=2)
    fit.fit(Logging(), loader(), loader())
    assert fit.loggers == [callback.logger]  # the user's choice stays
    run = gradlens.load(path)
    scalars = run.scalars()
    assert sorted(scalars.query("name == 'val_loss'").step) == [STEPS - 1, 2 * STEPS - 1]
    assert scalars.query("name == 'train_loss_step'").step.tolist() == list(range(2 * STEPS))
    assert run.events().query("kind == 'warning'").empty
