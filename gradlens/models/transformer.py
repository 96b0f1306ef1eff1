"""Small transformer-encoder classifier (the SCBERT substitute of document 000): ``encoder_{depth}``.

``tokens [B, T] -> embed (token) + pos_embed (learned position) -> blocks.0 ... blocks.{depth-1} -> norm
-> mean over positions -> head`` (logits ``[B, num_classes]``). Each block is a pre-LayerNorm encoder layer

    h = skip1(x, proj(attention(q(ln1(x)), k(ln1(x)), v(ln1(x)))))        (multi-head, softmax(QKᵀ/√d_h) V)
    y = skip2(h, fc2(act(fc1(ln2(h)))))

with additive identity skips (:class:`~gradlens.models.connections.IdentitySkip`) and every projection a
separate ``nn.Linear`` (``q``, ``k``, ``v``, ``proj``, ``fc1``, ``fc2``), so probes see all weight layers and
short circuits can be placed across blocks: every ``blocks.{i}`` maps ``[B, T, d_model]`` to the same shape.
Dropout is omitted. Inputs are token ids (``example_input`` draws them uniformly from ``vocab_size``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from gradlens.models.connections import IdentitySkip
from gradlens.models.mlp import ZooModel, check_depth_range, check_positive
from gradlens.models.registry import register_family
from gradlens.spec import LayerSpec, ModelSpec


class EncoderBlock(nn.Module):
    """Pre-LayerNorm transformer encoder layer ``[B, T, d] -> [B, T, d]`` (see the module docstring)."""

    def __init__(self, d_model: int, heads: int, d_ff: int, source: str) -> None:
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(d_model)
        self.q = nn.Linear(d_model, d_model)
        self.k = nn.Linear(d_model, d_model)
        self.v = nn.Linear(d_model, d_model)
        self.attn_softmax = nn.Softmax(dim=-1)
        self.proj = nn.Linear(d_model, d_model)
        self.skip1 = IdentitySkip(source)
        self.ln2 = nn.LayerNorm(d_model)
        self.fc1 = nn.Linear(d_model, d_ff)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(d_ff, d_model)
        self.skip2 = IdentitySkip()

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        # [B, T, d] -> [B, heads, T, d/heads]
        b, t, d = x.shape
        return x.view(b, t, self.heads, d // self.heads).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.ln1(x)
        q, k, v = self._split(self.q(a)), self._split(self.k(a)), self._split(self.v(a))
        weights = self.attn_softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]))  # [B, heads, T, T]
        attended = (weights @ v).transpose(1, 2).reshape(x.shape)
        h = self.skip1(x, self.proj(attended))
        return self.skip2(h, self.fc2(self.act(self.fc1(self.ln2(h)))))


class EncoderClassifier(ZooModel):
    """Token + learned position embeddings, ``depth`` encoder blocks, LayerNorm, mean pool, linear head.

    Module names: ``embed``, ``pos_embed``, ``embed_out`` (the summed embeddings, input of ``blocks.0``),
    ``blocks.{i}`` (with ``q``, ``k``, ``v``, ``proj``, ``fc1``,
    ``fc2``, ``skip1``, ``skip2``, ...), ``norm``, ``head``.
    """

    def __init__(
        self, depth: int, vocab_size: int, seq_len: int, d_model: int, heads: int, d_ff: int, num_classes: int
    ) -> None:
        super().__init__()
        self.input_shape = (seq_len,)
        self.num_classes = num_classes
        self.vocab_size = vocab_size
        self.embed = nn.Embedding(vocab_size, d_model)
        self.pos_embed = nn.Embedding(seq_len, d_model)
        self.embed_out = nn.Identity()
        self.blocks = nn.ModuleList(
            EncoderBlock(d_model, heads, d_ff, f"blocks.{i - 1}" if i else "embed_out") for i in range(depth)
        )
        for i, block in enumerate(self.blocks):
            block.skip2.source = f"blocks.{i}.skip1"
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, num_classes)

    def example_input(self, batch_size: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Uniform random token ids ``[batch_size, seq_len]`` (int64), drawn from ``generator`` when given."""
        tokens = torch.randint(self.vocab_size, (batch_size, *self.input_shape), generator=generator)
        return tokens.to(self.head.weight.device)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        x = self.embed_out(self.embed(tokens) + self.pos_embed(positions))
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x).mean(dim=1))

    def gradlens_spec(self) -> ModelSpec:
        names = ("q", "k", "v", "proj", "fc1", "fc2")
        layers = [f"blocks.{i}.{n}" for i in range(len(self.blocks)) for n in names]
        blocks = tuple(f"blocks.{i}" for i in range(len(self.blocks)))
        return ModelSpec(
            layers=(*(LayerSpec(n) for n in layers), LayerSpec("head")),
            activations=blocks,
            final_activation="norm",
            blocks=blocks,
        )


@register_family(
    "encoder_{depth}",
    params={"depth": int},
    examples=["encoder_2", "encoder_8"],
    summary="small pre-LN transformer-encoder classifier, depth blocks (SCBERT substitute, document 000)",
)
def encoder(
    depth: int,
    vocab_size: int = 32,
    seq_len: int = 16,
    d_model: int = 32,
    heads: int = 4,
    d_ff: int = 64,
    num_classes: int = 2,
) -> EncoderClassifier:
    """Build ``encoder_{depth}`` (``depth >= 1`` encoder blocks; ``d_model`` divisible by ``heads``)."""
    check_depth_range("encoder", depth, 1)
    sizes = {"vocab_size": vocab_size, "seq_len": seq_len, "d_model": d_model, "heads": heads, "d_ff": d_ff}
    check_positive(**sizes, num_classes=num_classes)
    if d_model % heads:
        raise ValueError(f"d_model {d_model} is not divisible by heads {heads}; pick heads dividing d_model")
    return EncoderClassifier(depth, vocab_size, seq_len, d_model, heads, d_ff, num_classes)
