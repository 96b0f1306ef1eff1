"""What the document-002 (VAN) analyses share: the α probe and one recorded run of any variant.

VAN and VAN(λ = 0) runs keep α out of the main optimizer (:func:`gradlens.models.van.split_van_parameters`)
and apply :class:`gradlens.models.van.VANUpdate` after every optimizer step (eqs. 7, 8: α by SGD with the
Lagrange term, then clipped to [0, 1]; λ ascending with η′ = ``lambda_lr_ratio``·η); the update's step
size follows the learning-rate schedule. The :class:`AlphaProbe` records, at every optimizer step (before
that step's update), the mean α-residual (1/L) Σ_l mean_i (1 − α_{l,i})² of Figures 2 and 3 and the mean α
of every VAN skip.

σ (DominantFlow, on the fixed probe batch, eval mode) is recorded every ``sigma_epochs`` epochs and at the
last step, GradStats every ``grad_every`` steps.

A VAN run is not resumed from a checkpoint: the multipliers λ live in the update object, not in the
checkpoint, so an interrupted VAN run is redone from the start.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from analyses.common import probe_batch, train_recorded
from gradlens.data import Dataset
from gradlens.models.van import VANUpdate, mean_alpha_residual, split_van_parameters, van_skips
from gradlens.probes import DominantFlow, GradStats, Probe, Quantity, Schedule
from gradlens.train import TrainConfig


class AlphaProbe(Probe):
    """The mean α-residual (document 002, Figures 2–3) and the mean α per VAN skip.

    Records ``residual`` (a scalar) and ``alpha_mean`` ``[skip]`` (labelled by the skip's module name).
    Reads parameters only: no gradients, no forward pass.
    """

    needs = frozenset()

    def __init__(self, every: int | Schedule | None = None, name: str = "van_alpha") -> None:
        super().__init__(every)
        self.name = name

    def quantities(self, ctx) -> dict[str, Quantity]:
        names = [name for name, _ in van_skips(ctx.model)]
        return {
            "residual": Quantity((), ()),
            "alpha_mean": Quantity((len(names),), ("skip",), {"skip": names}),
        }

    def compute(self, ctx) -> dict[str, torch.Tensor]:
        alphas = torch.stack([skip.alpha.detach().mean() for _, skip in van_skips(ctx.model)])
        return {"residual": mean_alpha_residual(ctx.model).double(), "alpha_mean": alphas.double()}


def flow_probes(
    steps_per_epoch: int,
    epochs: int,
    grad_every: int,
    sigma_epochs: int | None,
    sigma_activations: Sequence[str] | None = None,
) -> list[Probe]:
    """GradStats every ``grad_every`` steps and the last step; DominantFlow (σ) at the first step, every
    ``sigma_epochs`` epochs and the last step (not at all when ``sigma_epochs`` is None), on
    ``sigma_activations`` (default: the model's declared activations)."""
    total = steps_per_epoch * epochs
    probes: list[Probe] = [GradStats(every=Schedule.every(grad_every) | Schedule.at([total - 1]), params="weights")]
    if sigma_epochs is not None:
        schedule = Schedule.at([*range(0, total, steps_per_epoch * sigma_epochs), total - 1])
        probes.append(DominantFlow(every=schedule, activations=sigma_activations))
    return probes


def train_variant(
    params: dict,
    path: Path,
    *,
    model: nn.Module,
    data: Dataset,
    config: TrainConfig,
    resume: bool,
    progress: bool,
) -> None:
    """Train one model of any variant with gradient-flow probes (and the α probe and update for VAN).

    ``params`` supplies ``grad_every``, ``sigma_epochs``, ``probe_batch``, ``lambda_lr_ratio`` and
    ``lambda_init``, and optionally ``alpha_grad_scale`` (default 1: eq. 7 with the batch-mean loss; the batch
    size for the summed-loss reading, see :class:`gradlens.models.van.VANUpdate`).
    """
    steps_per_epoch = -(-data.n_train // config.batch_size)
    probes = flow_probes(steps_per_epoch, config.epochs, params["grad_every"], params["sigma_epochs"])
    weights, alphas = split_van_parameters(model)
    optimizer = torch.optim.SGD(weights, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    after_step = None
    if alphas:
        update = VANUpdate(
            model,
            config.lr,
            lambda_lr_ratio=params["lambda_lr_ratio"],
            lambda_init=params["lambda_init"],
            lambda_zero=bool(getattr(model, "lambda_zero", False) or getattr(model, "van_lambda_zero", False)),
            optimizer=optimizer,
            alpha_grad_scale=params.get("alpha_grad_scale", 1.0),
        )
        probes.append(AlphaProbe(every=1))
        resume = False

        def after_step() -> None:
            update.lr = optimizer.param_groups[0]["lr"]
            update.step()
            update.zero_grad()

    train_recorded(
        params,
        path,
        model=model,
        data=data,
        config=config,
        probes=probes,
        resume=resume,
        progress=progress,
        probe_batch=probe_batch(data, params["probe_batch"], seed=params.get("seed", 0)),
        optimizer=optimizer,
        after_step=after_step,
        updated_elsewhere=[f"{name}.alpha" for name, _ in van_skips(model)],  # VANUpdate's rule, not the optimizer
    )
