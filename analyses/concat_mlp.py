"""Dense-skip MLPs of document 003 (sections 2.1, 2.2): skip vs vanilla vs skip*, regulariser tuned on validation.

One run = one MLP (3 or 4 weight layers, widths of the document's EMNIST net 128-256-[256] or CIFAR net
512-256-[256]) with one training variant and one weight decay:

* ``skip``: dense skips between every pair of non-adjacent layers, trained from the start;
* ``vanilla``: no skips;
* ``skipstar`` ("skip*"): the skip net with its skips disabled for ``epochs`` epochs (it then computes a
  vanilla net), then the skips enabled and ``epochs`` more epochs. At the switch the weights that read the
  skipped inputs are set to zero (with their momentum), so the net starts stage two from the function the
  vanilla stage converged to; the document does not say how the new connections were initialised.

The regulariser is an L2 weight decay, tuned as the document did: every variant is trained with every
value of ``weight_decays`` and the table reports the value with the highest final validation accuracy.
The validation split is held out of the training set with a local generator (``n_val`` samples); the
per-epoch ``test_acc``/``test_loss`` scalars of these runs are VALIDATION accuracy/loss (``eval_split`` in
the stored config says so), and ``train_acc`` is the running accuracy over each epoch's mini-batches.
GradStats and DominantFlow (σ) are recorded in every run.

Data: ``paper`` uses EMNIST letters (26 classes, the document's set); ``quick`` uses the MNIST subset
(8 000 images: 6 000 train, 2 000 validation; 10 classes, same 28×28 input) because EMNIST is not here,
and the tables say so. The CIFAR-10 MLP of Table 3 is :mod:`analyses.concat_mlp_cifar`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from analyses.common import load_data, probe_batch, run_device, train_config, train_recorded
from analyses.van_common import flow_probes
from gradlens.data import Dataset
from gradlens.models.concat_mlp import DATASETS, ConcatMLP
from gradlens.train import make_optimizer

VARIANTS = ("skip", "vanilla", "skipstar")


@dataclass(frozen=True)
class Config:
    """Sweep: layers × variants × weight decays × seeds, and the training settings."""

    dataset: str
    arch: str  # "emnist" (128-256-[256]) or "cifar" (512-256-[256]) hidden widths
    n_val: int
    epochs: int
    weight_decays: tuple[float, ...]
    seeds: tuple[int, ...] = (0,)
    layers: tuple[int, ...] = (3, 4)
    variants: tuple[str, ...] = VARIANTS
    n_train: int | None = None
    n_test: int | None = None
    lr: float = 0.05
    momentum: float = 0.9
    batch_size: int = 128
    grad_every: int = 8
    sigma_epochs: int = 5
    probe_batch: int = 64

    @classmethod
    def smoke(cls) -> Config:
        return cls("digits", "emnist", 200, 1, (0.0, 1e-3), n_train=None, grad_every=2, sigma_epochs=1, probe_batch=16)

    @classmethod
    def quick(cls) -> Config:
        return cls("mnist", "emnist", 2000, 15, (0.0, 1e-4, 1e-3))

    @classmethod
    def medium(cls) -> Config:
        """= quick: yw-tab1/2 (no significant gain of skips; skip* best) show at quick."""
        return cls.quick()

    @classmethod
    def paper(cls) -> Config:
        return cls("emnist_letters", "emnist", 10000, 50, (0.0, 1e-5, 1e-4, 1e-3), grad_every=100, sigma_epochs=10)


def runs(config: Config) -> list[dict]:
    """One run per layers × variant × weight decay × seed."""
    settings = {k: v for k, v in asdict(config).items() if k not in ("layers", "variants", "weight_decays", "seeds")}
    return [
        {
            "analysis": "concat_mlp",
            **settings,
            "layers": layers,
            "variant": variant,
            "weight_decay": wd,
            "seed": seed,
            "model": f"concat_mlp_{config.arch}_{'vanilla' if variant == 'vanilla' else 'skip'}_{layers}",
            "total_epochs": 2 * config.epochs if variant == "skipstar" else config.epochs,
            "eval_split": "validation",
        }
        for layers in config.layers
        for variant in config.variants
        for wd in config.weight_decays
        for seed in config.seeds
    ]


def validation_split(data: Dataset, n_val: int, seed: int = 0) -> Dataset:
    """``data`` with ``n_val`` training samples held out as its test split (a local generator's permutation)."""
    if not 1 <= n_val < data.n_train:
        raise ValueError(f"n_val={n_val} must lie in 1..{data.n_train - 1} (the training set has {data.n_train})")
    order = torch.randperm(data.n_train, generator=torch.Generator().manual_seed(seed))
    val, train = order[:n_val], order[n_val:]
    return replace(
        data,
        x_train=data.x_train[train],
        y_train=data.y_train[train],
        x_test=data.x_train[val],
        y_test=data.y_train[val],
        preprocessing=f"{data.preprocessing}; {n_val} training samples held out as validation split (seed {seed})",
    )


def build(params: dict, data: Dataset) -> ConcatMLP:
    """The run's MLP: the document's hidden widths, the data's input shape and classes."""
    hidden = DATASETS[params["arch"]][1][: params["layers"] - 1]
    skips = params["variant"] != "vanilla"
    return ConcatMLP(hidden, data.input_shape, data.num_classes, skips, False, params["variant"] != "skipstar")


def sigma_activations(model: ConcatMLP) -> list[str]:
    """Hidden activations no wider than the last one: σ pairs channel i of a^(ℓ) with channel i of a^(L)
    (document 004, eq. 13), so it is undefined for the CIFAR net's 512-unit first layer (a^(L) has 256)."""
    spec = model.gradlens_spec()
    last = model.widths[model.n_layers - 1]
    return [name for j, name in enumerate(spec.activations, start=1) if model.widths[j] <= last]


def enable_skips_from_zero(model: ConcatMLP, optimizer: torch.optim.Optimizer) -> None:
    """Second stage of skip*: zero the weights (and momentum) that read skipped inputs, then enable the skips."""
    with torch.no_grad():
        for j in model.skip_sources:
            layer = getattr(model, f"fc{j}")
            own = model.widths[j - 1]
            layer.weight[:, own:] = 0
            buffer = optimizer.state.get(layer.weight, {}).get("momentum_buffer")
            if buffer is not None:
                buffer[:, own:] = 0
    model.set_skips_enabled(True)


def execute(params: dict, path: Path, *, data_dir: str | None, resume: bool, progress: bool) -> None:
    """Train one MLP variant."""
    data = validation_split(load_data(params, data_dir), params["n_val"])
    torch.manual_seed(params["seed"])
    model = build(params, data).to(run_device(params))
    config = train_config(params, epochs=params["total_epochs"], weight_decay=params["weight_decay"], log_every=0)
    optimizer = make_optimizer(model, config)
    steps_per_epoch = -(-data.n_train // config.batch_size)
    after_step = None
    if params["variant"] == "skipstar":
        switch_at = steps_per_epoch * params["epochs"]
        done = [0]
        resume = False  # the stage is not in the checkpoint: redo from the start

        def after_step() -> None:
            done[0] += 1
            if done[0] == switch_at:
                enable_skips_from_zero(model, optimizer)

    train_recorded(
        params,
        path,
        model=model,
        data=data,
        config=config,
        probes=flow_probes(steps_per_epoch, config.epochs, params["grad_every"], params["sigma_epochs"],
                           sigma_activations(model)),
        resume=resume,
        progress=progress,
        probe_batch=probe_batch(data, params["probe_batch"], seed=params["seed"]),
        optimizer=optimizer,
        after_step=after_step,
    )
