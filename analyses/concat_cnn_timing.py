"""Training time of document 003's CNNs, measured interleaved (Table 5: reinforced ≈ 2× the skip CNN).

The nets are timed in the same process on the same batches, in rounds: each round runs ``steps`` SGD
steps (forward, backward, update; batch ``batch_size``) of every variant, the variants' order rotated from
round to round, so that drifts in machine load hit all of them alike. One warm-up step per net is not
timed. The result stores seconds per step ``[round, variant]``, the parameter counts, the multiply-accumulates
of one forward pass per image (convolutions and the linear head, counted from the layers' output shapes) and
the number of torch threads. Computed with random weights: the cost of a step does not depend on the weights.
On a GPU (``params["device"]``) each timed stretch ends by waiting for the device, so it times the work, not its
launch; the configuration stores the device and ``device_name``.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from analyses.common import load_data, run_device
from gradlens.models import create_model
from gradlens.results import save_result
from gradlens.train import device_name

VARIANTS = ("skip", "reinforced", "vanilla")


@dataclass(frozen=True)
class Config:
    """Which data shapes the nets, and how long to time."""

    dataset: str
    rounds: int
    steps: int
    batch_size: int = 128
    variants: tuple[str, ...] = VARIANTS

    @classmethod
    def smoke(cls) -> Config:
        return cls("digits", 2, 1, batch_size=16)

    @classmethod
    def quick(cls) -> Config:
        return cls("mnist", 4, 5, batch_size=32)  # the batch concat_cnn trains with at quick scale

    @classmethod
    def medium(cls) -> Config:
        return cls("mnist", 4, 5)  # the batch concat_cnn trains with at medium scale (128)

    @classmethod
    def paper(cls) -> Config:
        return cls("cifar10", 10, 20)


def runs(config: Config) -> list[dict]:
    """One computed result."""
    return [{"analysis": "concat_cnn_timing", **asdict(config), "seed": 0}]


def forward_macs(model: torch.nn.Module, x: torch.Tensor) -> int:
    """Multiply-accumulates of one forward pass per sample: Σ over Conv2d/Linear of outputs × inputs per output."""
    total = [0]

    def count(module: torch.nn.Module, args: tuple, output: torch.Tensor) -> None:
        per_output = module.weight[0].numel()  # in_channels/groups · kh · kw, or in_features
        total[0] += output[0].numel() * per_output

    layers = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)]
    handles = [m.register_forward_hook(count) for m in layers]
    try:
        with torch.no_grad():
            model(x[:1])
    finally:
        for handle in handles:
            handle.remove()
    return total[0]


def execute(params: dict, path: Path, *, data_dir: str | None, resume: bool, progress: bool) -> None:
    """Time every variant in rotated rounds and store seconds per step."""
    data = load_data(params, data_dir)
    channels, size, _ = data.input_shape
    torch.manual_seed(params["seed"])
    variants = list(params["variants"])
    device = run_device(params)
    models = {
        v: create_model(f"concat_cnn_{v}", in_channels=channels, image_size=size, num_classes=data.num_classes)
        for v in variants
    }
    for model in models.values():
        model.to(device)
    wait = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    optimizers = {v: torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9) for v, m in models.items()}
    batch = params["batch_size"]
    x, y = data.x_train[:batch], data.y_train[:batch]

    def step(variant: str) -> None:
        optimizers[variant].zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(models[variant](x), y).backward()
        optimizers[variant].step()

    for variant in variants:
        step(variant)
    seconds = np.zeros((params["rounds"], len(variants)))
    for r in range(params["rounds"]):
        for k in range(len(variants)):
            index = (k + r) % len(variants)
            wait()
            start = time.perf_counter()
            for _ in range(params["steps"]):
                step(variants[index])
            wait()
            seconds[r, index] = (time.perf_counter() - start) / params["steps"]
    arrays = {
        "variants": np.array(variants),
        "seconds_per_step": seconds,
        "parameters": np.array([sum(p.numel() for p in models[v].parameters()) for v in variants]),
        "forward_macs": np.array([forward_macs(models[v], x) for v in variants]),
        "threads": np.array(torch.get_num_threads()),
    }
    config = {**params, "data_source": data.source, "device_name": device_name(device)}
    save_result(path, {"config": config}, arrays, overwrite=True)
