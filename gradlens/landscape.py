"""2-D loss landscapes around trained weights along filter-normalised random directions (Li et al. 2018).

Li, Xu, Taylor, Studer and Goldstein, "Visualizing the Loss Landscape of Neural Nets" (NeurIPS 2018),
section 4, the figure document 001 ("Skip connections") reproduces. For trained weights ``θ`` and two
random directions ``δ``, ``η`` the landscape is the function

    f(α, β) = L(θ + α·δ + β·η)          on a square grid α, β ∈ [−span, span], ``resolution`` points each

where ``L`` is the mean loss over a fixed set of samples (the *batch budget*). Each direction is drawn
from a standard normal distribution with the shape of the parameters and then *filter-normalised*: for
every parameter tensor ``θ_i`` with at least two dimensions, and every filter ``j`` (index along dimension
0: an output channel of a convolution ``[C_out, C_in, K, K]`` or an output unit of a linear layer
``[O, I]``),

    δ_{i,j} ← δ_{i,j} / ‖δ_{i,j}‖ · ‖θ_{i,j}‖          (Li et al., eq. 1; Frobenius norms over the filter)

so that the direction has the scale of the weights it perturbs, filter by filter (this removes the scale
invariance of ReLU/BN nets from the picture). Parameters with fewer than two dimensions (biases, BN
affine weights) get a zero direction by default (Li et al.'s "ignore biasbn"); with ``include_1d=True``
their direction is the parameter itself (the choice of Li et al.'s code when they are not ignored).

The computation has no side effects: directions come from a local ``torch.Generator``; the model runs in
eval mode under ``torch.no_grad`` (BN uses its running statistics and never updates them); parameters,
buffers and train/eval flags are restored exactly afterwards, and no gradient is left on any parameter.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

Directions = tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]


@dataclass
class Landscape:
    """A computed 2-D landscape.

    Attributes:
        alphas: grid coordinates along the first direction ``[R]``.
        betas: grid coordinates along the second direction ``[R]``.
        loss: mean loss ``[R, R]``; ``loss[i, j] = L(θ + alphas[i]·δ + betas[j]·η)``.
        accuracy: top-1 accuracy ``[R, R]`` on the same samples (classification outputs ``[B, K]``).
        center_loss: ``L(θ)``, the loss at the trained weights.
        samples: number of samples each grid value averages over.
    """

    alphas: np.ndarray
    betas: np.ndarray
    loss: np.ndarray
    accuracy: np.ndarray
    center_loss: float
    samples: int


def filter_normalized_direction(
    model: nn.Module, generator: torch.Generator, *, include_1d: bool = False
) -> dict[str, torch.Tensor]:
    """One random direction, filter-normalised to the weights of ``model`` (see the module docstring).

    Args:
        model: the network at its (trained) weights ``θ``.
        generator: local generator for the normal draws (CPU); the global RNG is not touched.
        include_1d: give 1-D parameters (biases, BN affine) the direction ``θ_i`` instead of zero.

    Returns:
        Parameter name -> direction tensor of the parameter's shape, dtype and device. A filter whose
        weights are all zero gets a zero direction.
    """
    directions = {}
    for name, param in model.named_parameters():
        weights = param.detach()
        if weights.dim() <= 1:
            directions[name] = weights.clone() if include_1d else torch.zeros_like(weights)
            continue
        draw = torch.randn(weights.shape, generator=generator, dtype=torch.float64)
        flat_draw = draw.reshape(weights.shape[0], -1)
        flat_weights = weights.double().cpu().reshape(weights.shape[0], -1)
        scale = flat_weights.norm(dim=1, keepdim=True) / flat_draw.norm(dim=1, keepdim=True).clamp_min(1e-300)
        directions[name] = (flat_draw * scale).reshape(weights.shape).to(weights.dtype).to(weights.device)
    return directions


def random_directions(model: nn.Module, seed: int = 0, *, include_1d: bool = False) -> Directions:
    """Two independent filter-normalised directions drawn from a generator seeded with ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    first = filter_normalized_direction(model, generator, include_1d=include_1d)
    return first, filter_normalized_direction(model, generator, include_1d=include_1d)


def _check_directions(model: nn.Module, directions: Directions) -> None:
    params = dict(model.named_parameters())
    for index, direction in enumerate(directions):
        missing = sorted(set(params) - set(direction))
        if missing:
            raise KeyError(f"direction {index} lacks parameters {missing[:3]}; give one tensor per parameter")
        for name, tensor in direction.items():
            if name not in params or tensor.shape != params[name].shape:
                raise ValueError(
                    f"direction {index} entry {name!r} has shape {tuple(tensor.shape)}; expected a parameter "
                    f"of the model with that shape"
                )


def loss_landscape(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    resolution: int = 21,
    span: float = 1.0,
    batch_size: int = 256,
    max_batches: int | None = None,
    seed: int = 0,
    directions: Directions | None = None,
    include_1d: bool = False,
    loss_fn: Callable[..., torch.Tensor] = nn.functional.cross_entropy,
) -> Landscape:
    """Evaluate ``L(θ + α·δ + β·η)`` on a ``resolution × resolution`` grid (see the module docstring).

    Args:
        model: any module mapping ``x`` to outputs ``[B, K]``; left exactly as it was found.
        x: inputs ``[N, ...]``; only the first ``batch_size · max_batches`` samples are used.
        y: targets ``[N]`` (class indices for the default loss).
        resolution: grid points per axis (``>= 2``; odd puts ``(0, 0)`` on the grid).
        span: the grid covers ``[−span, span]`` on both axes.
        batch_size: samples per forward pass.
        max_batches: the batch budget: mini-batches per grid point (None: all of ``x``).
        seed: seed of the local generator that draws the two directions.
        directions: two given directions (parameter name -> tensor) instead of random ones.
        include_1d: see :func:`filter_normalized_direction`.
        loss_fn: ``loss_fn(output, y, reduction="sum")``.

    Returns:
        A :class:`Landscape`.

    Raises:
        ValueError: ``resolution < 2``, non-positive ``span``/``batch_size``/``max_batches``, mismatched
            ``x``/``y``, or directions that do not match the parameters.
    """
    if resolution < 2:
        raise ValueError(f"resolution must be >= 2 grid points per axis, got {resolution}")
    if not span > 0:
        raise ValueError(f"span must be positive, got {span}")
    if batch_size < 1 or (max_batches is not None and max_batches < 1):
        raise ValueError(f"batch_size and max_batches must be >= 1, got {batch_size} and {max_batches}")
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"x and y must hold the same positive number of samples, got {len(x)} and {len(y)}")
    if directions is None:
        directions = random_directions(model, seed, include_1d=include_1d)
    _check_directions(model, directions)
    n = len(x) if max_batches is None else min(len(x), batch_size * max_batches)
    x, y = x[:n], y[:n]
    first = next(model.parameters())
    if x.is_floating_point():
        x = x.to(device=first.device, dtype=first.dtype)
    else:
        x = x.to(first.device)
    y = y.to(first.device)

    params = dict(model.named_parameters())
    saved = {name: p.detach().clone() for name, p in params.items()}
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    modes = {m: m.training for m in model.modules()}
    grads = {name: p.grad for name, p in params.items()}
    coords = np.linspace(-span, span, resolution)
    loss = np.zeros((resolution, resolution))
    accuracy = np.zeros((resolution, resolution))
    model.eval()
    try:
        with torch.no_grad():
            center = _evaluate(model, x, y, batch_size, loss_fn)[0]
            for i, alpha in enumerate(coords):
                for j, beta in enumerate(coords):
                    _move(params, saved, directions, float(alpha), float(beta))
                    loss[i, j], accuracy[i, j] = _evaluate(model, x, y, batch_size, loss_fn)
    finally:
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(saved[name])
                p.grad = grads[name]
            for name, b in model.named_buffers():
                b.copy_(buffers[name])
        for module, mode in modes.items():
            module.training = mode
    return Landscape(coords, coords.copy(), loss, accuracy, center, n)


def _move(
    params: Mapping[str, nn.Parameter],
    saved: Mapping[str, torch.Tensor],
    directions: Directions,
    alpha: float,
    beta: float,
) -> None:
    """θ ← θ₀ + α·δ + β·η, in place."""
    first, second = directions
    for name, p in params.items():
        p.copy_(saved[name] + alpha * first[name].to(p.dtype) + beta * second[name].to(p.dtype))


def _evaluate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int, loss_fn: Callable[..., torch.Tensor]
) -> tuple[float, float]:
    """Mean loss and top-1 accuracy over ``(x, y)`` in mini-batches of ``batch_size``."""
    total, correct = 0.0, 0
    for start in range(0, len(x), batch_size):
        out = model(x[start : start + batch_size])
        target = y[start : start + batch_size]
        total += float(loss_fn(out, target, reduction="sum"))
        if out.dim() == 2 and target.dim() == 1:
            correct += int((out.argmax(1) == target).sum())
    return total / len(x), correct / len(x)
