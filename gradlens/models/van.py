"""Variable Activation Networks (VAN, document 002): phased-out skips and their Lagrangian update.

A VAN block computes (document 002, eq. 4)

    x_{l+1} = F_l(x_l, W_l) + (1 − α_l) · x_l,     α_l ∈ [0, 1]^n,

with one α per neuron (MLP, α of shape ``[n]``) or per channel (CNN, α of shape ``[C, 1, 1]``). Training
enforces α_l = 1 (no skip) at the end by the Lagrangian (eq. 6)

    ℒ = C(y, x_L; {W_l, α_l}) + Σ_l λ_lᵀ (α_l − 1),

with α descending and λ ascending (eqs. 7, 8):

    α_l ← clip(α_l − η (∂C/∂α_l + λ_l), 0, 1),     λ_l ← λ_l + η′ (α_l − 1).

Here ∂C/∂α_l is the gradient of the training loss (what ``loss.backward()`` leaves in ``alpha.grad``);
adding λ_l makes the bracket ∂ℒ/∂α_l of eq. 6 (the document writes ∂ℒ/∂α_l + λ_l, which counts λ once
when read with ℒ = C as the loss that is back-propagated). Since α ≤ 1, λ only decreases from its
initial −1, and the term −ηλ pushes α towards 1. VAN(λ = 0) keeps λ = 0: α follows plain clipped SGD.

How α meets the main optimizer: α is an ``nn.Parameter`` (so ``loss.backward()`` fills ``alpha.grad`` and
``model.double()`` converts it), but it must be updated by :class:`VANUpdate` only — exclude it from the
main optimizer with :func:`split_van_parameters` (no momentum, no weight decay on α, never updated twice)::

    weights, alphas = split_van_parameters(model)
    optimizer = torch.optim.SGD(weights, lr=1e-3, momentum=0.9)
    van = VANUpdate(model, lr=1e-3, lambda_lr_ratio=0.5)
    for x, y in batches:
        optimizer.zero_grad(); van.zero_grad()
        loss_fn(model(x), y).backward()
        optimizer.step(); van.step()
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
from torch import nn

from gradlens.models.connections import SkipMarker


class VANSkip(SkipMarker):
    """Phased-out skip of document 002, eq. 4: ``forward(x, fx) = fx + (1 − α) · x``.

    Args:
        shape: shape of α, broadcast against ``x``: ``(n,)`` per neuron for ``[B, n]``, ``(C, 1, 1)`` per
            channel for ``[B, C, H, W]``.
        source: module whose output is ``x``.
        alpha_init: initial value of every α (document 002: 0, i.e. the block starts as a ResNet block).

    Attributes:
        alpha: ``nn.Parameter`` of ``shape``, kept in [0, 1] by :class:`VANUpdate` (clipped after each
            update).
    """

    def __init__(self, shape: Sequence[int], source: str = "", alpha_init: float = 0.0) -> None:
        super().__init__(source)
        if not 0.0 <= alpha_init <= 1.0:
            raise ValueError(f"alpha_init must lie in [0, 1], got {alpha_init!r}")
        self.alpha = nn.Parameter(torch.full(tuple(shape), float(alpha_init)))

    def forward(self, x: torch.Tensor, fx: torch.Tensor) -> torch.Tensor:
        return fx + (1 - self.alpha) * x

    def extra_repr(self) -> str:
        return f"shape={tuple(self.alpha.shape)}, {super().extra_repr()}"


def van_skips(model: nn.Module) -> list[tuple[str, VANSkip]]:
    """The ``(name, VANSkip)`` pairs of ``model`` in registration order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, VANSkip)]


def split_van_parameters(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """Split the parameters of ``model`` into (everything else, the α of its VAN skips).

    Give the first list to the main optimizer and let :class:`VANUpdate` update the second, so that α is
    updated exactly once per step (by eq. 7) and gets neither momentum nor weight decay.
    """
    alpha_ids = {id(skip.alpha) for _, skip in van_skips(model)}
    params = list(model.parameters())
    return [p for p in params if id(p) not in alpha_ids], [p for p in params if id(p) in alpha_ids]


def mean_alpha_residual(model: nn.Module) -> torch.Tensor:
    """Mean α-residual of document 002 (Figures 2, 3): (1/L) Σ_l mean_i (1 − α_{l,i})².

    The sum over the neurons/channels i of a layer is normalised by their number n_l (a mean), so each of
    the L VAN skips counts equally and the value lies in [0, 1]: 1 at α = 0 (all skips fully present), 0
    when every skip is removed (α = 1).

    Returns:
        Detached scalar tensor.

    Raises:
        ValueError: ``model`` has no ``VANSkip``.
    """
    skips = van_skips(model)
    if not skips:
        raise ValueError(f"{type(model).__name__} has no VANSkip modules; mean_alpha_residual needs VAN")
    with torch.no_grad():
        return torch.stack([((1 - s.alpha) ** 2).mean() for _, s in skips]).mean()


class VANUpdate:
    """The VAN update of α and the Lagrange multipliers λ (document 002, eqs. 7, 8), one object per model.

    ``step()`` (call after ``loss.backward()``, next to the main optimizer's ``step()``) performs, for every
    VAN skip l and neuron i, in this order:

        α ← clip(α − η (s·g + λ), 0, 1),   g = alpha.grad = ∂C/∂α (zero when None), s = alpha_grad_scale,
        λ ← λ + η′ (α − 1),              η′ = lambda_lr_ratio · η, with the *updated* α.

    With ``lambda_zero=True`` (VAN(λ = 0)) λ stays 0 and only the clipped SGD step on α is taken.

    Args:
        model: a model with ``VANSkip`` modules (found by type).
        lr: η, the SGD step size for α (document 002: the main learning rate). May be changed later through
            the ``lr`` attribute, e.g. to follow a learning-rate schedule.
        lambda_lr_ratio: η′/η (document 002: 0.5 for the thin MLPs, 0.1 for CIFAR).
        lambda_init: initial value of every λ (document 002: −1).
        lambda_zero: VAN(λ = 0): never enforce the constraint.
        optimizer: optional main optimizer; if given, it is checked not to hold any α.
        alpha_grad_scale: g is multiplied by this before the step. 1 (default) reads C as the batch-mean loss
            that is back-propagated; the batch size B reads eq. 7's ∂C/∂α as that of the loss *summed* over
            the batch (reading (a) of issue 14.3b: the only one found that delays the removal of the skips
            to the learning-rate drops, as document 002's Figure 2 shows; see docs/figures.md).

    Attributes:
        multipliers: dict VANSkip name -> λ tensor (shape of its α).
    """

    def __init__(
        self,
        model: nn.Module,
        lr: float,
        lambda_lr_ratio: float = 0.5,
        lambda_init: float = -1.0,
        lambda_zero: bool = False,
        optimizer: torch.optim.Optimizer | None = None,
        alpha_grad_scale: float = 1.0,
    ) -> None:
        if lr <= 0:
            raise ValueError(f"VANUpdate needs a positive lr, got {lr!r}")
        if lambda_lr_ratio < 0:
            raise ValueError(f"lambda_lr_ratio must be >= 0, got {lambda_lr_ratio!r}")
        self.skips = van_skips(model)
        if not self.skips:
            raise ValueError(f"{type(model).__name__} has no VANSkip modules; build a VAN model (*_van_*)")
        if optimizer is not None:
            check_alpha_excluded(model, optimizer)
        self.lr = float(lr)
        self.lambda_lr_ratio = float(lambda_lr_ratio)
        self.lambda_zero = lambda_zero
        if not alpha_grad_scale > 0:
            raise ValueError(
                f"alpha_grad_scale must be > 0 (1 for a batch-mean loss, B for a sum), got {alpha_grad_scale!r}"
            )
        self.alpha_grad_scale = float(alpha_grad_scale)
        init = 0.0 if lambda_zero else float(lambda_init)
        self.multipliers: dict[str, torch.Tensor] = {
            name: torch.full_like(skip.alpha, init, requires_grad=False) for name, skip in self.skips
        }

    def alphas(self) -> Iterable[nn.Parameter]:
        """The α parameters this object updates."""
        return [skip.alpha for _, skip in self.skips]

    @torch.no_grad()
    def step(self) -> None:
        """One update of every α (eq. 7, then clipping) and λ (eq. 8)."""
        eta_lambda = self.lambda_lr_ratio * self.lr
        for name, skip in self.skips:
            alpha = skip.alpha
            lam = self.multipliers[name]
            # The model may have been moved (e.g. .double()) after this object was built.
            if lam.dtype != alpha.dtype or lam.device != alpha.device:
                lam = self.multipliers[name] = lam.to(alpha)
            grad = alpha.grad * self.alpha_grad_scale if alpha.grad is not None else torch.zeros_like(alpha)
            alpha.sub_(self.lr * (grad + lam)).clamp_(0.0, 1.0)
            if not self.lambda_zero:
                lam.add_(eta_lambda * (alpha - 1))

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear the gradients of the α (the main optimizer does not hold them)."""
        for alpha in self.alphas():
            if set_to_none:
                alpha.grad = None
            elif alpha.grad is not None:
                alpha.grad.zero_()

    def state_dict(self) -> dict[str, object]:
        """The λ and settings, for checkpoints."""
        return {
            "lr": self.lr,
            "lambda_lr_ratio": self.lambda_lr_ratio,
            "lambda_zero": self.lambda_zero,
            "alpha_grad_scale": self.alpha_grad_scale,
            "multipliers": {k: v.clone() for k, v in self.multipliers.items()},
        }

    def load_state_dict(self, state: dict[str, object]) -> None:
        """Restore what :meth:`state_dict` returned."""
        multipliers = dict(state["multipliers"])  # type: ignore[call-overload]
        if set(multipliers) != set(self.multipliers):
            raise KeyError(
                f"VANUpdate state has multipliers for {sorted(multipliers)}, "
                f"the model has {sorted(self.multipliers)}"
            )
        self.lr = float(state["lr"])  # type: ignore[arg-type]
        self.lambda_lr_ratio = float(state["lambda_lr_ratio"])  # type: ignore[arg-type]
        self.lambda_zero = bool(state["lambda_zero"])
        self.alpha_grad_scale = float(state.get("alpha_grad_scale", 1.0))  # type: ignore[arg-type]
        for name, value in multipliers.items():
            self.multipliers[name] = value.clone().to(self.multipliers[name])


def phaseout_closed_form(
    lr: float, lambda_lr_ratio: float, lambda_init: float = -1.0, alpha_init: float = 0.0
) -> tuple[float, float, float, int]:
    """Closed form of the α trajectory of eqs. 7–8 when the loss does not push on α (∂C/∂α = 0).

    With u_t = α_t − 1, η′ = ``lambda_lr_ratio``·η and no clipping, :class:`VANUpdate` is the linear map

        (u_{t+1}, λ_{t+1}) = M (u_t, λ_t),   M = [[1, −η], [η′, 1 − ηη′]],   det M = 1,

    whose eigenvalues are e^{±iθ} with cos θ = 1 − ηη′/2 (0 < ηη′ < 4). Hence

        u_t = R cos(θ t − φ),   R cos φ = u_0,   R sin φ = (u_1 − u_0 cos θ) / sin θ,   u_1 = u_0 − η λ_0.

    From α_0 < 1 with λ_0 < 0 the clip first binds at the removal step T = min{t : u_t ≥ 0}; from then on
    α_t = 1 and λ stays put (α − 1 = 0), so the α-residual (1 − α)² is u_t² for t < T and 0 after.
    Document 002's CIFAR setting (η = 0.1, η′ = η/10, λ_0 = −1, α_0 = 0) gives T = 10 steps.

    Returns:
        ``(R, θ, φ, T)``.
    """
    eta, eta_l = float(lr), float(lambda_lr_ratio) * float(lr)
    if not 0 < eta * eta_l < 4 or lambda_init >= 0 or alpha_init >= 1:
        raise ValueError(
            f"closed form needs 0 < η·η′ < 4, λ_0 < 0 and α_0 < 1; got η = {lr}, η′ = {eta_l}, "
            f"λ_0 = {lambda_init}, α_0 = {alpha_init}"
        )
    theta = math.acos(1 - eta * eta_l / 2)
    u0 = alpha_init - 1.0
    u1 = u0 - eta * lambda_init
    a, b = u0, (u1 - u0 * math.cos(theta)) / math.sin(theta)
    radius, phi = math.hypot(a, b), math.atan2(b, a)
    # first t with cos(θt − φ) ≥ 0 after the start (u_0 < 0): θt − φ ≥ −π/2 + 2π k, smallest k above
    t = math.ceil((phi - math.pi / 2) / theta)
    while radius * math.cos(theta * t - phi) < 0:  # guard rounding at the boundary
        t += 1
    while t > 0 and radius * math.cos(theta * (t - 1) - phi) >= 0:
        t -= 1
    return radius, theta, phi, t


def alpha_trajectory(
    steps: int,
    lr: float,
    lambda_lr_ratio: float,
    lambda_init: float = -1.0,
    alpha_init: float = 0.0,
    *,
    grad: Sequence[float] | None = None,
    grad_scale: float = 1.0,
    double_lambda: bool = False,
    momentum: float = 0.0,
    clip: bool = True,
) -> list[float]:
    """α after each of ``steps`` updates of one scalar α under a reading of eqs. 7–8 (for comparing readings).

    ``double_lambda``: λ counted twice in eq. 7 (∂ℒ/∂α already holds λ, plus the written + λ);
    ``momentum``: heavy-ball velocity v ← μ v + (g + λ), α ← α − η v; ``clip=False``: no clip to [0, 1];
    ``grad``: ∂C/∂α per step (default 0), multiplied by ``grad_scale`` (the batch size B for a loss summed
    over the batch instead of averaged). Updating once per epoch is the same sequence with one entry per epoch.
    With the defaults this is exactly :class:`VANUpdate` and :func:`phaseout_closed_form`.
    """
    alpha, lam, velocity, out = float(alpha_init), float(lambda_init), 0.0, []
    eta_l = lambda_lr_ratio * lr
    for t in range(steps):
        g = grad_scale * (float(grad[t]) if grad is not None else 0.0)
        velocity = momentum * velocity + g + (2 if double_lambda else 1) * lam
        alpha -= lr * velocity
        if clip:
            alpha = min(max(alpha, 0.0), 1.0)
        lam += eta_l * (alpha - 1)
        out.append(alpha)
    return out


def check_alpha_excluded(model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Raise ``ValueError`` if ``optimizer`` holds an α of ``model`` (α would be updated twice)."""
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    for name, skip in van_skips(model):
        if id(skip.alpha) in held:
            raise ValueError(
                f"the main optimizer holds {name}.alpha; build it from split_van_parameters(model)[0] "
                "so that only VANUpdate updates α"
            )
