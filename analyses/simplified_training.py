"""Simplified PlnNet (KWI) vs ResNet (HMWI) vs dominant-path net T′ (document 004, appendices A, C, D):
Tables 1, 3, 4, 5 and Figures 2, 3, 7, 9, 10 and 12(a).

One training run per (kind, depth, seed) with ``kind`` in ``plain`` (``simplified_plain_{d}``, KWI),
``residual`` (``simplified_resnet_{d}``, HMWI) and ``dominant`` (``simplified_dominant_{d}``, T′ = I + R_s,
HMWI). Every run records :class:`~gradlens.probes.GradStats` at every step and the trainer's per-step loss
and per-epoch ``epoch_train_loss`` (risk L), ``cost`` (C = L + λ‖θ‖²) and ``test_acc`` (E = 1 − test_acc).

Training follows the document: SGD with momentum 0.9; the weight decay is the explicit penalty λ‖θ‖² over
every parameter (λ = 1e-4; the optimizer's own weight decay is 0), so the cost C and the "weight
regularisation" of Table 4 are exactly what is optimised (for T′ the penalty covers the whole stored kernel
I + R); learning rate 1e-2, except 1e-3 for the plain
net of depth 44 and 5e-3 for the T′ net of depth 44; divided by 10 at 60 % and 80 % of the epochs (the
document's epochs 120 and 160 of 200).

Stored beside the parameters (in the run's configuration, for Table 4): ``initial_train_loss``,
``initial_train_acc``, ``initial_test_acc`` (the whole training/test set in eval mode before the first
step) and ``initial_weight_reg`` (λ‖θ₀‖²).

Weights (Table 3, Figure 7): a plain or residual run with ``save_weights`` (depth ``weights_depth``) also
writes ``<key>.weights.h5`` (:func:`weights_path`), a result with the plain-network weights (biases
excluded, every weight tensor flattened and concatenated in ``state_dict`` order) before (``init``) and
after (``final``) training: ``p`` for the plain net, ``t = T(r)`` for the residual one, and the boolean
``id_entry`` mask of the ID entries (document 004, eq. 1). The file is written right after the last
optimizer step, before the training run's file is finished, so a finished run always has it.

Noise stability (document 004, section 5 and appendix D: Figures 3, 10 and 12(a)): the plain and residual runs of
the depths and seeds of ``Config.noise`` (:class:`NoiseProbes`) also record, on one fixed probe batch of
``probe_size`` test samples (:func:`analyses.common.probe_batch`, drawn with a local generator: the global RNG,
hence the initialisation and the mini-batch order, is untouched), ``LayerCushion`` at the last step (every layer;
the two channel-doubling block convolutions of a ResNet with the identity part of their ID entries, eq. 1, i.e.
the option-A shortcut), ``DominantFlow`` (σ^(ℓ), eq. 13) at the first and the last step and, for residual nets,
``FinalGradHist`` (∂L/∂a^(L)) every ``hist_every`` steps of the first ``hist_epochs`` epochs. Such a run carries
the probe settings as ``params["noise"]`` and the name of the cushion layer (1-based ``cushion_layer``, stem
convolution = 1) as ``cushion_layer_name`` in its stored configuration. Probes do not change training (gradlens
restores the RNG and every buffer after each probe), so these are the Table-1 nets themselves: the noise-stability
items read them through analysis :mod:`analyses.simplified_noise` (``RUNS_OF = "simplified_training"``), one file
per net for every item. Runs without ``noise`` have no such key, so their keys are unchanged.

Presets: ``paper`` is the document's CIFAR-10 setup (depths 20/32/44, 200 epochs, batch 128, 10 seeds; the
noise probes on seed 0 at depths 20 and 32, as Figures 3 and 12: probe batch 256, FinalGradHist at every step of
the first 4 epochs, the document's "4 epochs (1564 iterations)" of Figure 10); ``medium`` keeps the document's
batch 128, its learning rates and its schedule shape (/10 at 60 % and 80 % of the epochs, i.e. after epochs 12
and 16) on the data of ``quick`` for 20 epochs (1 260 steps), depths 20/32/44, seeds 0 and 1 (noise probes on seed
0 at depths 20 and 32, probe batch 128, FinalGradHist every 4 steps of the first 4 epochs);
``quick`` uses the whole 8 000 / 2 000 real-MNIST subset 2×2 average-pooled to 14×14 (a quarter of the
convolution cost per image, so four times the SGD steps for the same CPU time), batch 32, 6 epochs (1 500
steps; learning rate /10 after epochs 4 and 5) and 2 seeds: 1 314 s of CPU, 663 s wall with ``--jobs 2`` on
the idle 2-core machine (measured without the noise probes, which quick records on seed 0 at depths 20 and 32:
probe batch 128, FinalGradHist every 16 steps of the first 3 epochs). HMWI nets sit on the initial loss plateau
for their first few hundred steps (tiny residual branches and classifier); at 28×28 with the same CPU time (235
steps) they never left it, so the comparison was between a training and a non-training net. ``smoke`` uses the
embedded 8×8 digits and depths 5 and 8 (noise probes on seed 0 at both depths, probe batch 8, cushion layer 3).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from analyses.common import load_data, probe_batch, run_device, train_config, train_recorded
from gradlens.data import Dataset
from gradlens.models import create_model
from gradlens.models.simplified import SimplifiedNet
from gradlens.models.transforms import decay_penalty, id_entries, transform
from gradlens.probes import DominantFlow, FinalGradHist, GradStats, LayerCushion, Probe
from gradlens.probes.base import Schedule
from gradlens.results import save_result
from gradlens.train import TrainConfig, evaluate, load_checkpoint

KIND_MODELS = {"plain": "simplified_plain_{}", "residual": "simplified_resnet_{}", "dominant": "simplified_dominant_{}"}
#: The kinds whose runs can record the noise-stability probes (Figures 3, 10 and 12(a) compare these two).
NOISE_KINDS = ("plain", "residual")


@dataclass(frozen=True)
class NoiseProbes:
    """Which runs record the noise-stability measurements, and how (see the module docstring).

    Attributes:
        depths, seeds: the plain and residual runs that record them (document: depths 20 and 32, one net each).
        probe_size: samples of the fixed probe batch of test samples.
        cushion_layer: the layer (1-based, stem convolution = 1) of the cushion histogram (document: 10).
        hist_epochs, hist_every: FinalGradHist fires every ``hist_every`` steps of the first ``hist_epochs``
            epochs (document: every iteration of 4 epochs).
    """

    depths: tuple[int, ...]
    seeds: tuple[int, ...] = (0,)
    probe_size: int = 128
    cushion_layer: int = 10
    hist_epochs: int = 4
    hist_every: int = 1

    def covers(self, kind: str, depth: int, seed: int) -> bool:
        """Whether the run of ``kind``, ``depth`` and ``seed`` records the probes."""
        return kind in NOISE_KINDS and depth in self.depths and seed in self.seeds

    def settings(self) -> dict:
        """The probe settings a covered run carries as ``params["noise"]``."""
        return {"probe_size": self.probe_size, "cushion_layer": self.cushion_layer,
                "hist_epochs": self.hist_epochs, "hist_every": self.hist_every}


@dataclass(frozen=True)
class Config:
    """The sweep (see the module docstring); ``noise``: the plain and residual runs that also record the
    noise-stability probes, and their settings (None: no run does)."""

    dataset: str
    n_train: int | None
    n_test: int | None
    depths: tuple[int, ...]
    seeds: tuple[int, ...]
    epochs: int
    weights_depth: int
    batch_size: int = 128
    downsample: int = 1
    kinds: tuple[str, ...] = ("plain", "residual", "dominant")
    lr: float = 1e-2
    lr_exceptions: tuple[tuple[str, int, float], ...] = (("plain", 44, 1e-3), ("dominant", 44, 5e-3))
    momentum: float = 0.9
    weight_decay: float = 1e-4
    milestone_fractions: tuple[float, ...] = (0.6, 0.8)
    noise: NoiseProbes | None = None

    @classmethod
    def smoke(cls) -> Config:
        return cls("digits", 128, 64, depths=(5, 8), seeds=(0, 1), epochs=2, weights_depth=8, batch_size=32,
                   noise=NoiseProbes(depths=(5, 8), probe_size=8, cushion_layer=3, hist_epochs=1))

    @classmethod
    def quick(cls) -> Config:
        return cls("mnist", None, None, depths=(20, 32, 44), seeds=(0, 1), epochs=6, weights_depth=32,
                   batch_size=32, downsample=2,
                   noise=NoiseProbes(depths=(20, 32), probe_size=128, hist_epochs=3, hist_every=16))

    @classmethod
    def medium(cls) -> Config:
        # the document's batch, learning rates and schedule shape on quick's data: 20 epochs of 63 steps
        return cls("mnist", None, None, depths=(20, 32, 44), seeds=(0, 1), epochs=20, weights_depth=32,
                   downsample=2, noise=NoiseProbes(depths=(20, 32), probe_size=128, hist_epochs=4, hist_every=4))

    @classmethod
    def paper(cls) -> Config:
        return cls("cifar10", None, None, depths=(20, 32, 44), seeds=tuple(range(10)), epochs=200,
                   weights_depth=32, noise=NoiseProbes(depths=(20, 32), probe_size=256))

    def learning_rate(self, kind: str, depth: int) -> float:
        """The document's initial learning rate of ``kind`` at ``depth``."""
        return next((lr for k, d, lr in self.lr_exceptions if (k, d) == (kind, depth)), self.lr)

    def milestones(self) -> list[int]:
        """Epochs after which the learning rate is divided by 10 (120 and 160 of 200 in the document)."""
        return [round(f * self.epochs) for f in self.milestone_fractions]


def runs(config: Config) -> list[dict]:
    """kinds × depths × seeds; the runs ``config.noise`` covers carry its probe settings as ``"noise"``."""
    return [
        {
            "analysis": "simplified_training",
            "model": KIND_MODELS[kind].format(depth),
            "kind": kind,
            "depth": depth,
            "seed": seed,
            "epochs": config.epochs,
            "dataset": config.dataset,
            "n_train": config.n_train,
            "n_test": config.n_test,
            "batch_size": config.batch_size,
            "downsample": config.downsample,
            "lr": config.learning_rate(kind, depth),
            "momentum": config.momentum,
            "weight_decay": config.weight_decay,
            "milestones": config.milestones(),
            "save_weights": depth == config.weights_depth and kind != "dominant",
            **noise_params(config, kind, depth, seed),
        }
        for kind in config.kinds
        for depth in config.depths
        for seed in config.seeds
    ]


def noise_params(config: Config, kind: str, depth: int, seed: int) -> dict:
    """``{"noise": settings}`` for a run that records the noise-stability probes, else ``{}`` (no key: the
    other runs keep the keys they had before the probes were added)."""
    if config.noise is None or not config.noise.covers(kind, depth, seed):
        return {}
    return {"noise": config.noise.settings()}


def weights_path(path: str | Path) -> Path:
    """The weights file written beside the training run ``path`` (runs with ``save_weights``)."""
    path = Path(path)
    return path.with_name(path.stem + ".weights.h5")


def plain_weights(model: SimplifiedNet) -> tuple[np.ndarray, np.ndarray]:
    """Flattened plain-network weights (``p``, or ``t = T(r)`` for a ResNet) and their ID-entry mask.

    Biases are excluded; weight tensors are concatenated in ``state_dict`` order.
    """
    state = {k: v.detach().to("cpu", torch.float64) for k, v in model.state_dict().items()}
    if model.kind == "residual":
        state = transform(state, model.id_layer_names())
    id_layers = {f"{name}.weight" for name in model.id_layer_names()}
    values, ids = [], []
    for name, _ in model.named_parameters():
        if not name.endswith("weight"):
            continue
        values.append(state[name].flatten())
        mask = id_entries(state[name]) > 0 if name in id_layers else torch.zeros_like(state[name], dtype=torch.bool)
        ids.append(mask.flatten())
    return torch.cat(values).numpy(), torch.cat(ids).numpy()


def at_step(step: int, done: int, action: Callable[[], None]) -> Callable[[], None]:
    """An ``after_step`` callback that calls ``action`` after optimizer step number ``step`` (1-based),
    counting from ``done`` steps already taken (a resumed run)."""
    count = [done]

    def after_step() -> None:
        count[0] += 1
        if count[0] == step:
            action()

    return after_step


def execute(params: dict, path: Path, *, data_dir: str | None, resume: bool, progress: bool) -> None:
    """Train one simplified net with GradStats at every step; write its weights file if asked."""
    data = load_data(params, data_dir)
    options = {"in_channels": data.input_shape[0], "image_size": data.input_shape[-1],
               "num_classes": data.num_classes}
    torch.manual_seed(params["seed"])
    model = create_model(params["model"], **options).to(run_device(params))
    config = train_config(params, milestones=tuple(params["milestones"]))
    lam = params["weight_decay"]

    def penalty(net: nn.Module) -> torch.Tensor:
        return lam * decay_penalty(net, "l2")

    initial = initial_metrics(model, data, penalty)
    after_step = None
    if params["save_weights"]:
        init, id_entry = plain_weights(model)

        def write_weights() -> None:
            final, _ = plain_weights(model)
            arrays = {"init": init.astype(np.float32), "final": final.astype(np.float32), "id_entry": id_entry}
            meta = {"config": params, "weights": "t = T(r)" if params["kind"] == "residual" else "p"}
            save_result(weights_path(path), meta, arrays, overwrite=True)

        checkpoint = path.with_suffix(".ckpt.pt")
        done = load_checkpoint(checkpoint).history.steps if resume and checkpoint.exists() else 0
        total = params["epochs"] * math.ceil(data.n_train / params["batch_size"])
        after_step = at_step(total, done, write_weights)
    probes, batch, noise_meta = noise_probes(params, model, data, config)
    train_recorded(
        params,
        path,
        model=model,
        data=data,
        config=config,
        probes=[GradStats(every=1, params="weights"), *probes],
        resume=resume,
        progress=progress,
        probe_batch=batch,
        penalty=penalty,
        after_step=after_step,
        extra_meta={**initial, **noise_meta},
    )


def noise_probes(
    params: dict, model: nn.Module, data: Dataset, config: TrainConfig
) -> tuple[list[Probe], tuple[torch.Tensor, torch.Tensor] | None, dict]:
    """The noise-stability probes of a run with ``params["noise"]``, their probe batch and the meta they add
    (``cushion_layer_name``); nothing for any other run.

    LayerCushion (per-sample μ of every layer) at the last step, DominantFlow (σ^(ℓ), eq. 13) at the first and the
    last step, FinalGradHist (∂L/∂a^(L), Figure 10) of a residual net every ``hist_every`` steps of the first
    ``hist_epochs`` epochs. The probe batch is drawn from the test set with a local generator, after the model is
    built: the global RNG is not touched, so the run trains exactly as without the probes.
    """
    noise = params.get("noise")
    if noise is None:
        return [], None, {}
    per_epoch = math.ceil(data.n_train / config.batch_size)
    steps = config.epochs * per_epoch
    probes: list[Probe] = [LayerCushion(every=[steps - 1]), DominantFlow(every=Schedule.first_last(steps))]
    if params["kind"] == "residual":
        hist_steps = min(steps, noise["hist_epochs"] * per_epoch)
        probes.append(FinalGradHist(every=range(0, hist_steps, noise["hist_every"])))
    layer = model.gradlens_spec().layers[noise["cushion_layer"] - 1].name
    return probes, probe_batch(data, noise["probe_size"]), {"cushion_layer_name": layer}


def initial_metrics(model: nn.Module, data, penalty: Callable[[nn.Module], torch.Tensor]) -> dict:
    """Loss/accuracy on the whole training and test sets and the weight regularisation before training."""
    train_loss, train_acc = evaluate(model, data.x_train.to(next(model.parameters()).dtype), data.y_train)
    _, test_acc = evaluate(model, data.x_test.to(next(model.parameters()).dtype), data.y_test)
    with torch.no_grad():
        reg = float(penalty(model))
    return {"initial_train_loss": train_loss, "initial_train_acc": train_acc, "initial_test_acc": test_acc,
            "initial_weight_reg": reg}
