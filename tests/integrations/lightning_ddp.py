"""What each rank runs in the Lightning DDP test (importable by the worker processes)."""

from __future__ import annotations

import torch
from torch import nn

SAMPLES, PER_RANK_BATCH = 32, 4


def data() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(11)
    return torch.randn(SAMPLES, 6, generator=generator, dtype=torch.float64), torch.randint(
        0, 3, (SAMPLES,), generator=generator
    )


def make_net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3)).double()


def fit(rank: int, world: int, path: str) -> dict:
    """Lightning ``strategy="ddp"`` on 2 CPU processes (started by the harness, as torchrun would)."""
    import lightning.pytorch as pl

    from gradlens.integrations.lightning import GradlensCallback
    from gradlens.probes import GradStats

    class Tiny(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = make_net()

        def training_step(self, batch, batch_idx):
            x, y = batch
            return nn.functional.cross_entropy(self.net(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    x, y = data()
    # rank r trains on samples r, r + 2, r + 4, ... in order, so global batch k is samples 8k .. 8k + 7
    # (Lightning's own DistributedSampler would shuffle them)
    mine = torch.utils.data.Subset(torch.utils.data.TensorDataset(x, y), range(rank, SAMPLES, world))
    loader = torch.utils.data.DataLoader(mine, batch_size=PER_RANK_BATCH)
    callback = GradlensCallback(path, probes=[GradStats()])
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=world,
        strategy="ddp",
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
        callbacks=[callback],
    )
    trainer.fit(Tiny(), loader)
    return {"recorder": type(callback.session.recorder).__name__, "global_rank": trainer.global_rank}


def plain_loop(world: int) -> tuple[list[dict[str, torch.Tensor]], list[float]]:
    """Single process on the global batches (the union of the ranks' batches) with the mean loss."""
    net = make_net()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    x, y = data()
    grads, losses = [], []
    batch = PER_RANK_BATCH * world
    for step in range(SAMPLES // batch):
        part = slice(step * batch, (step + 1) * batch)
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(net(x[part]), y[part])
        loss.backward()
        grads.append({f"net.{n}": p.grad.clone() for n, p in net.named_parameters()})
        losses.append(loss.item())
        optimizer.step()
    return grads, losses
