"""Helpers shared by the analyses: data by name, and one recorded, checkpointed, resumable training run."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from gradlens.data import Dataset, load_dataset
from gradlens.probes import Probe
from gradlens.session import attach
from gradlens.train import History, TrainConfig, load_checkpoint, make_optimizer, train


def load_data(params: dict, data_dir: str | None) -> Dataset:
    """The dataset named by ``params["dataset"]``, subset to ``params["n_train"]``/``["n_test"]`` and
    average-pooled by ``params["downsample"]`` if given.

    Missing files raise the data module's one-line error naming ``--data-dir`` / ``$GRADLENS_DATA``; nothing
    is substituted silently.
    """
    data = load_dataset(params["dataset"], data_dir, normalize=params.get("normalize", False))
    n_train, n_test = params.get("n_train"), params.get("n_test")
    if n_train or n_test:
        data = data.subset(min(n_train or data.n_train, data.n_train), min(n_test or data.n_test, data.n_test), seed=0)
    return data.downsample(params.get("downsample", 1))


def data_meta(data: Dataset) -> dict:
    """What a caption needs to say about the data actually used."""
    return {
        "data_source": data.source,
        "preprocessing": data.preprocessing,
        "n_train": data.n_train,
        "n_test": data.n_test,
    }


def train_config(params: dict, **options: object) -> TrainConfig:
    """``TrainConfig`` with ``epochs``, ``batch_size``, ``lr``, ``momentum`` and ``seed`` from ``params``.

    Every other field (``weight_decay``, ``milestones``, ``dtype``, ``log_every``...) is passed explicitly in
    ``options``, which also override the five: an analysis that carries weight decay in a penalty never gets
    it in the optimizer by accident.
    """
    base = {key: params[key] for key in ("epochs", "batch_size", "lr", "momentum", "seed") if key not in options}
    return TrainConfig(**base, **options)


def train_recorded(
    params: dict,
    path: Path,
    *,
    model: nn.Module,
    data: Dataset,
    config: TrainConfig,
    probes: Sequence[Probe],
    resume: bool,
    progress: bool,
    probe_batch: tuple[torch.Tensor, torch.Tensor] | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    penalty: Callable[[nn.Module], torch.Tensor] | None = None,
    after_step: Callable[[], None] | None = None,
    extra_meta: dict | None = None,
) -> History:
    """Train ``model`` with ``probes`` recorded into ``path``; checkpoint each epoch; resume if asked.

    The checkpoint ``<path>.ckpt.pt`` (model, optimizer, scheduler, history after the last finished epoch)
    stays beside the run: analyses read the trained weights from it to compute post-training quantities.
    With ``resume`` and a checkpoint, training continues after its epoch and the file's records after its
    last step are dropped; without a checkpoint an unfinished file is redone from scratch.
    """
    checkpoint = path.with_suffix(".ckpt.pt")
    resume_from = load_checkpoint(checkpoint) if resume and checkpoint.exists() else None
    optimizer = optimizer or make_optimizer(model, config)
    meta = {**params, **data_meta(data), "train": config.to_dict(), **(extra_meta or {})}
    session = attach(
        model,
        optimizer,
        path,
        probes=probes,
        probe_batch=probe_batch,
        meta=meta,
        overwrite=resume_from is None,
        resume_step=None if resume_from is None else resume_from.history.steps - 1,
    )
    with session:
        return train(
            model,
            data,
            config,
            session=session,
            optimizer=optimizer,
            penalty=penalty,
            after_step=after_step,
            progress=progress,
            description=f"{params.get('model', 'train')} seed {params.get('seed', 0)}",
            checkpoint=checkpoint,
            resume_from=resume_from,
        )


def probe_batch(data: Dataset, size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed batch of ``size`` test samples (the same samples at every firing), drawn with a local generator."""
    generator = torch.Generator().manual_seed(seed)
    index = torch.randperm(data.n_test, generator=generator)[:size]
    return data.x_test[index], data.y_test[index]
