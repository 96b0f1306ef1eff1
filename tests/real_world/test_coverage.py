"""Coverage (issue 11.8): GradStats sees every trainable parameter of a transformer by default.

A tiny randomly initialised Hugging Face BERT and an ``nn.MultiheadAttention`` model: every trainable
parameter has a row named by its qualified name, and its statistics equal those of ``p.grad`` read in the
training loop; ``params="weights"`` keeps one row per layer weight, named by the layer module.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import gradlens
from gradlens.probes import GradStats
from tests.tiny_models import tiny_bert

transformers = pytest.importorskip("transformers")


class Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.attn(x, x, x, need_weights=False)[0].mean(1))


def _bert_batches(steps: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    data = torch.Generator().manual_seed(3)
    return [
        (torch.randint(0, 100, (4, 12), generator=data), torch.randint(0, 3, (4,), generator=data))
        for _ in range(steps)
    ]


def _train(model_fn, batches, loss_of, path, probes):
    torch.manual_seed(0)
    model = model_fn()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    grads = []
    session = gradlens.attach(model, optimizer, path, probes=probes) if path else None
    for batch in batches:
        optimizer.zero_grad()
        loss_of(model, batch).backward()
        grads.append({n: p.grad.double().clone() for n, p in model.named_parameters() if p.grad is not None})
        optimizer.step()
    if session:
        session.close()
    return model, grads


def _bert_loss(model, batch):
    tokens, labels = batch
    return model(input_ids=tokens, labels=labels).loss


def _attention_loss(model, batch):
    x, y = batch
    return nn.functional.cross_entropy(model(x), y)


def _check_every_parameter(path, model, grads):
    run = gradlens.load(path)
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    _, _, _, labels = run.array("grad_stats", "norm")
    assert labels["layer"] == trainable
    assert [row["name"] for row in run.meta["parameters"]] == trainable
    frame = run.frame("grad_stats").set_index(["step", "layer", "quantity"])["value"]
    for step, by_name in enumerate(grads):
        assert set(by_name) == set(trainable)  # every parameter got a gradient
        for name, g in by_name.items():
            assert frame[(step, name, "norm")] == pytest.approx(float(g.norm()), rel=1e-5), (step, name)
            # GradStats stores its float64-accumulated statistics as float32 (schema 3): relative 6e-8
            assert frame[(step, name, "mean")] == pytest.approx(float(g.mean()), rel=1e-7, abs=1e-15)
            assert frame[(step, name, "mean_abs")] == pytest.approx(float(g.abs().mean()), rel=1e-5)
            assert frame[(step, name, "max_abs")] == pytest.approx(float(g.abs().max()), rel=1e-6)
            assert frame[(step, name, "nonfinite")] == 0
    return run


def test_tiny_bert_every_trainable_parameter_by_name(tmp_path):
    batches = _bert_batches(3)
    bare, _ = _train(tiny_bert, batches, _bert_loss, None, [])
    model, grads = _train(tiny_bert, batches, _bert_loss, tmp_path / "run.h5", [GradStats()])
    run = _check_every_parameter(tmp_path / "run.h5", model, grads)
    names = run.array("grad_stats", "norm")[3]["layer"]
    assert len(names) == 3 + 2 + 2 * (6 * 2 + 2 * 2) + 2 + 2  # embeddings, LayerNorm, blocks, pooler, head
    for name in (
        "bert.embeddings.word_embeddings.weight",
        "bert.embeddings.LayerNorm.bias",
        "bert.encoder.layer.1.attention.self.query.bias",
        "classifier.bias",
    ):
        assert name in names
    kinds = {row["name"]: row["kind"] for row in run.meta["parameters"]}
    assert kinds["bert.embeddings.LayerNorm.weight"] == "layernorm"
    assert kinds["bert.encoder.layer.0.intermediate.dense.weight"] == "linear"
    for (name, a), (_, b) in zip(bare.state_dict().items(), model.state_dict().items(), strict=True):
        assert torch.equal(a, b), name  # observation does not perturb training


def test_tiny_bert_weights_option_keeps_layer_rows(tmp_path):
    model, grads = _train(tiny_bert, _bert_batches(1), _bert_loss, tmp_path / "run.h5", [GradStats(params="weights")])
    run = gradlens.load(tmp_path / "run.h5")
    labels = run.array("grad_stats", "norm")[3]["layer"]
    assert labels == list(run.layers["name"])
    assert labels[:3] == [f"bert.encoder.layer.0.attention.self.{m}" for m in ("query", "key", "value")]
    assert len(labels) == 2 * 6 + 2  # six Linear per block, pooler, classifier
    norms = run.array("grad_stats", "norm")[1][0]
    for label, norm in zip(labels, norms, strict=True):
        assert norm == pytest.approx(float(grads[0][label + ".weight"].norm()), rel=1e-5)


def test_multihead_attention_in_proj_is_covered(tmp_path):
    data = torch.Generator().manual_seed(5)
    batches = [(torch.randn(4, 5, 8, generator=data), torch.randint(0, 3, (4,), generator=data)) for _ in range(3)]
    bare, _ = _train(Attention, batches, _attention_loss, None, [])
    model, grads = _train(Attention, batches, _attention_loss, tmp_path / "run.h5", [GradStats()])
    run = _check_every_parameter(tmp_path / "run.h5", model, grads)
    assert run.array("grad_stats", "norm")[3]["layer"] == [
        "attn.in_proj_weight",
        "attn.in_proj_bias",
        "attn.out_proj.weight",
        "attn.out_proj.bias",
        "head.weight",
        "head.bias",
    ]
    kinds = {row["name"]: (row["module"], row["kind"]) for row in run.meta["parameters"]}
    assert kinds["attn.in_proj_weight"] == ("attn", "multiheadattention")
    assert kinds["attn.out_proj.weight"] == ("attn.out_proj", "linear")
    for (name, a), (_, b) in zip(bare.state_dict().items(), model.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
