"""Helpers shared by the analyses: data by name, and one recorded, checkpointed, resumable training run.

A run trains on ``params["device"]`` (:func:`run_device`), which :func:`analyses.run_spec.execute_run` sets
from ``--device`` (it is not part of the run's key: where a run computes is not what it computes); the data
is moved there once, when loaded, and every analysis moves its model there as soon as it is built (before any
optimizer, update rule or probe is made from it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from gradlens.data import Dataset, load_dataset
from gradlens.probes import Probe
from gradlens.session import attach
from gradlens.train import (
    History,
    TrainConfig,
    data_on,
    device_name,
    load_checkpoint,
    make_optimizer,
    resolve_device,
    train,
)


def run_device(params: dict) -> torch.device:
    """The device of a run: ``params["device"]`` (a resolved name such as ``cuda:0``, set by
    :func:`analyses.run_spec.execute_run`), the CPU for params without one (an analysis called directly)."""
    return resolve_device(params.get("device", "cpu"))


def load_data(params: dict, data_dir: str | None) -> Dataset:
    """The dataset named by ``params["dataset"]``, subset to ``params["n_train"]``/``["n_test"]`` and
    average-pooled by ``params["downsample"]`` if given.

    Missing files raise the data module's one-line error naming ``--data-dir`` / ``$GRADLENS_DATA``; nothing
    is substituted silently. The tensors are on the run's device (:func:`run_device`): moved once, here.
    """
    data = load_dataset(params["dataset"], data_dir, normalize=params.get("normalize", False))
    n_train, n_test = params.get("n_train"), params.get("n_test")
    if n_train or n_test:
        data = data.subset(min(n_train or data.n_train, data.n_train), min(n_test or data.n_test, data.n_test), seed=0)
    return data_on(data.downsample(params.get("downsample", 1)), run_device(params))


def data_meta(data: Dataset) -> dict:
    """What a caption needs to say about the data actually used."""
    return {
        "data_source": data.source,
        "preprocessing": data.preprocessing,
        "n_train": data.n_train,
        "n_test": data.n_test,
    }


def train_config(params: dict, **options: object) -> TrainConfig:
    """``TrainConfig`` with ``epochs``, ``batch_size``, ``lr``, ``momentum`` and ``seed`` from ``params``, and the
    run's device (:func:`run_device`).

    Every other field (``weight_decay``, ``milestones``, ``dtype``, ``log_every``...) is passed explicitly in
    ``options``, which also override these: an analysis that carries weight decay in a penalty never gets
    it in the optimizer by accident.
    """
    base = {key: params[key] for key in ("epochs", "batch_size", "lr", "momentum", "seed") if key not in options}
    if "device" not in options:
        base["device"] = str(run_device(params))
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
    updated_elsewhere: Sequence[str] = (),
) -> History:
    """Train ``model`` with ``probes`` recorded into ``path``; checkpoint each epoch; resume if asked.

    The checkpoint ``<path>.ckpt.pt`` (model, optimizer, scheduler, history after the last finished epoch)
    stays beside the run: analyses read the trained weights from it to compute post-training quantities.
    With ``resume`` and a checkpoint, training continues after its epoch and the file's records after its
    last step are dropped; without a checkpoint an unfinished file is redone from scratch.

    The model, the data and the probe batch go to ``config.device`` before the session is attached; the file's
    configuration stores the device (``train.device``) and what it is (``device_name``: the GPU's or CPU's name).
    """
    checkpoint = path.with_suffix(".ckpt.pt")
    resume_from = load_checkpoint(checkpoint) if resume and checkpoint.exists() else None
    device = next(model.parameters()).device if config.device is None else resolve_device(config.device)
    model.to(device)
    data = data_on(data, device)
    if probe_batch is not None:
        probe_batch = (probe_batch[0].to(device), probe_batch[1].to(device))
    optimizer = optimizer or make_optimizer(model, config)
    meta = {**params, **data_meta(data), "train": config.to_dict(), "device_name": device_name(device),
            **(extra_meta or {})}
    session = attach(
        model,
        optimizer,
        path,
        probes=probes,
        probe_batch=probe_batch,
        meta=meta,
        overwrite=resume_from is None,
        resume_step=None if resume_from is None else resume_from.history.steps - 1,
        updated_elsewhere=updated_elsewhere,
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
    index = torch.randperm(data.n_test, generator=generator)[:size].to(data.x_test.device)
    return data.x_test[index], data.y_test[index]
