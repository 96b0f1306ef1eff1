"""Transformer-encoder classifier: one block and the whole net against explicit attention maths."""

import math

import pytest
import torch

from gradlens.models import create_model


def build() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("encoder_2", vocab_size=7, seq_len=3, d_model=4, heads=2, d_ff=5).double()


def layer_norm(ln: torch.nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    mean = x.mean(-1, keepdim=True)
    var = x.var(-1, unbiased=False, keepdim=True)
    return (x - mean) / torch.sqrt(var + ln.eps) * ln.weight + ln.bias


def block_reference(block: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    a = layer_norm(block.ln1, x)
    q, k, v = (a @ lin.weight.T + lin.bias for lin in (block.q, block.k, block.v))
    heads = []
    for h in range(2):  # per head h: softmax(Q_h K_hᵀ / √2) V_h over the 2 features of the head
        sl = slice(2 * h, 2 * h + 2)
        scores = q[..., sl] @ k[..., sl].transpose(-2, -1) / math.sqrt(2)
        heads.append(torch.softmax(scores, dim=-1) @ v[..., sl])
    h1 = x + torch.cat(heads, -1) @ block.proj.weight.T + block.proj.bias
    hidden = torch.nn.functional.gelu(layer_norm(block.ln2, h1) @ block.fc1.weight.T + block.fc1.bias)
    return h1 + hidden @ block.fc2.weight.T + block.fc2.bias


def test_forward_matches_explicit_formula() -> None:
    model = build()
    tokens = model.example_input(4, torch.Generator().manual_seed(0))
    x = model.embed.weight[tokens] + model.pos_embed.weight[torch.arange(3)]
    for block in model.blocks:
        x = block_reference(block, x)
    pooled = layer_norm(model.norm, x).mean(1)
    expected = pooled @ model.head.weight.T + model.head.bias
    torch.testing.assert_close(model(tokens), expected, rtol=1e-12, atol=1e-12)


def test_example_input_leaves_global_rng_alone() -> None:
    model = build()
    state = torch.get_rng_state()
    tokens = model.example_input(8, torch.Generator().manual_seed(3))
    assert torch.equal(torch.get_rng_state(), state)
    assert tokens.dtype == torch.int64 and tokens.shape == (8, 3) and 0 <= tokens.min() and tokens.max() < 7


def test_spec_blocks_and_sources() -> None:
    model = build()
    spec = model.gradlens_spec()
    spec.validate(model)
    assert spec.blocks == ("blocks.0", "blocks.1")
    assert spec.layer_names()[:6] == [f"blocks.0.{n}" for n in ("q", "k", "v", "proj", "fc1", "fc2")]
    assert model.blocks[0].skip1.source == "embed_out" and model.blocks[1].skip1.source == "blocks.0"
    with pytest.raises(ValueError, match="not divisible by heads"):
        create_model("encoder_2", d_model=6, heads=4)
