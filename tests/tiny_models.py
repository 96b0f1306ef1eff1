"""Small models the scenario tests share."""

from __future__ import annotations

import torch
from torch import nn


def tiny_bert(*, dropout: float = 0.1, attention: str | None = None, seed: int = 0) -> nn.Module:
    """A randomly initialised Hugging Face BERT classifier: 2 layers, hidden 64, 2 heads, 100 tokens, 3 labels.

    ``seed`` seeds the global generator right before the weights are drawn, so two calls build equal models.
    """
    import transformers

    config = transformers.BertConfig(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        vocab_size=100,
        max_position_embeddings=32,
        num_labels=3,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
        **({} if attention is None else {"attn_implementation": attention}),
    )
    torch.manual_seed(seed)
    return transformers.BertForSequenceClassification(config)


def lightning_classifier(net: nn.Module, lr: float = 0.1):
    """A Lightning module that trains ``net`` on ``(x, y)`` batches by cross-entropy with SGD at ``lr`` (the caller
    has checked that Lightning is installed)."""
    import lightning.pytorch as pl

    class Classifier(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def training_step(self, batch, batch_idx):
            x, y = batch
            return nn.functional.cross_entropy(self.net(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=lr)

    return Classifier()
