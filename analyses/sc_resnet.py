"""ResNet-v1 vs SCResNet (document 000, sections 4.2, 5.1–5.4): Table 2, Figures 4, 6, 7, 8 and 9.

One training run per (model, depth, SC variant, batch size, seed), all with :class:`~gradlens.probes.GradStats`
at every step (the per-layer signed mean gradient of Figure 6) and the trainer's per-step loss and per-epoch
accuracy. The sweep is the union of

- the main comparison (Table 2, Figures 4 and 6): ``resnet_v1_{d}`` and ``scresnet_v1_{d}`` (SC weight
  ``sc_weight``, single SC per stage, batch ``batch_size``) for every depth of ``depths`` and every seed;
- the ablations over ``ablation_depths`` (Figures 7–9): multiple SC (``sc_rears="every_block"``), the SC
  weights of ``weights`` and the batch sizes of ``batch_sizes`` (SCResNet only, as in the document's
  Figure 9).

Runs that coincide (the default SC weight, single SC, default batch size) have equal parameters and so are
made once. Keys of every run: ``model``, ``depth``, ``sc`` (bool), ``sc_weight`` and ``sc_rears`` (None for
the plain ResNet), ``batch_size``, ``seed``, ``epochs``, ``dataset``, ``n_train``, ``n_test``, ``lr``.

Presets: ``paper`` is the document's CIFAR-10 setup (depths 20…1202, batch 32, SC weight 0.2; 200 epochs,
lr 0.1 /10 at 100 and 150 as in ResNet-v1 training; 3 seeds: the document does not say how many).
``quick`` uses the 10k real-MNIST subset at 28×28 (``in_channels=1, image_size=28``), depths 20/32/44,
few samples and epochs; ``medium``: the whole 8 000 / 2 000 subset 2×2 average-pooled to 14×14, depths 20/32/44
with 3 seeds (the ablations at depths 20 and 32 with seeds 0 and 1, as quick: 38 runs, about an hour on the
2-core machine), the document's batch 32 and schedule shape (η = 0.1, ÷10 after epochs 4 and 6 of 8, as 100
and 150 of 200); ``smoke`` uses the embedded 8×8 digits and depth 14 (the smallest depth with a
short circuit inside a stage at gap 2).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from analyses.common import load_data, run_device, train_config, train_recorded
from gradlens.models import create_model
from gradlens.probes import GradStats


@dataclass(frozen=True)
class Config:
    """The sweep (see the module docstring)."""

    dataset: str
    n_train: int | None
    n_test: int | None
    depths: tuple[int, ...]
    ablation_depths: tuple[int, ...]
    seeds: tuple[int, ...]
    epochs: int
    ablation_seeds: tuple[int, ...] | None = None  # the ablations' seeds (None: ``seeds``)
    batch_size: int = 32
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 1e-4
    milestones: tuple[int, ...] = ()
    sc_weight: float = 0.2
    weights: tuple[float, ...] = (0.1, 0.2, 0.5)
    batch_sizes: tuple[int, ...] = (32, 64, 128)
    downsample: int = 1

    @classmethod
    def smoke(cls) -> Config:
        return cls(
            "digits",
            128,
            64,
            depths=(14,),
            ablation_depths=(14,),
            seeds=(0,),
            epochs=2,
            batch_size=64,
            weights=(0.5,),
            batch_sizes=(128,),
        )

    @classmethod
    def quick(cls) -> Config:
        return cls("mnist", 1000, 500, depths=(20, 32, 44), ablation_depths=(20, 32), seeds=(0, 1), epochs=4)

    @classmethod
    def medium(cls) -> Config:
        # the whole subset at 14×14, 3 seeds (the ablations: 2 seeds at depths 20 and 32, as quick), the document's
        # batch 32 and its schedule shape: η = 0.1 ÷10 at 50 % and 75 % of training (its epochs 100 and 150 of 200)
        return cls("mnist", None, None, depths=(20, 32, 44), ablation_depths=(20, 32), seeds=(0, 1, 2), epochs=8,
                   ablation_seeds=(0, 1), lr=0.1, milestones=(4, 6), downsample=2)

    @classmethod
    def paper(cls) -> Config:
        return cls(
            "cifar10",
            None,
            None,
            depths=(20, 32, 44, 56, 110, 1202),
            ablation_depths=(20, 32, 44, 56, 110),
            seeds=(0, 1, 2),
            epochs=200,
            lr=0.1,
            milestones=(100, 150),
        )


def _run(
    config: Config,
    depth: int,
    seed: int,
    *,
    sc: bool,
    weight: float | None = None,
    rears: str = "stage_end",
    batch_size: int | None = None,
) -> dict:
    return {
        "analysis": "sc_resnet",
        "model": f"{'sc' if sc else ''}resnet_v1_{depth}",
        "depth": depth,
        "sc": sc,
        "sc_weight": (config.sc_weight if weight is None else weight) if sc else None,
        "sc_rears": rears if sc else None,
        "batch_size": config.batch_size if batch_size is None else batch_size,
        "seed": seed,
        "epochs": config.epochs,
        "dataset": config.dataset,
        "n_train": config.n_train,
        "n_test": config.n_test,
        "lr": config.lr,
        "momentum": config.momentum,
        "weight_decay": config.weight_decay,
        "milestones": list(config.milestones),
        **({"downsample": config.downsample} if config.downsample != 1 else {}),
    }


def runs(config: Config) -> list[dict]:
    """Main comparison over ``depths``, then the ablations over ``ablation_depths`` (duplicates removed)."""
    out = []
    for depth in config.depths:
        for seed in config.seeds:
            out += [_run(config, depth, seed, sc=False), _run(config, depth, seed, sc=True)]
    for depth in config.ablation_depths:
        for seed in config.seeds if config.ablation_seeds is None else config.ablation_seeds:
            out.append(_run(config, depth, seed, sc=False))
            out.append(_run(config, depth, seed, sc=True, rears="every_block"))
            out += [_run(config, depth, seed, sc=True, weight=w) for w in config.weights]
            out += [_run(config, depth, seed, sc=True, batch_size=b) for b in config.batch_sizes]
    unique = {repr(sorted(p.items())): p for p in out}
    return list(unique.values())


def execute(params: dict, path: Path, *, data_dir: str | None, resume: bool, progress: bool) -> None:
    """Train one ResNet/SCResNet with GradStats at every step."""
    data = load_data(params, data_dir)
    channels, size = data.input_shape[0], data.input_shape[-1]
    options = {"in_channels": channels, "image_size": size, "num_classes": data.num_classes}
    if params["sc"]:
        options |= {"sc_weight": params["sc_weight"], "sc_rears": params["sc_rears"]}
    torch.manual_seed(params["seed"])
    model = create_model(params["model"], **options).to(run_device(params))
    config = train_config(params, weight_decay=params["weight_decay"], milestones=tuple(params["milestones"]))
    circuits = [[sc.front, sc.rear] for sc in getattr(model, "short_circuits", None) or ()]
    train_recorded(
        params,
        path,
        model=model,
        data=data,
        config=config,
        probes=[GradStats(every=1, params="weights")],
        resume=resume,
        progress=progress,
        extra_meta={"short_circuits": circuits},
    )
