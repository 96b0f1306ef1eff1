"""Frozen layers of a transformer (issue 11, real-world suite): not recorded, listed as frozen, said so.

The embeddings of a tiny Hugging Face BERT are frozen (``requires_grad_(False)``), as when fine-tuning.
GradStats records exactly the trainable parameters, with values equal to ``p.grad``; the file lists the
frozen ones with ``trainable: false``; the report lists them under "Not shown, and why"; training with the
probes attached ends with the same weights as without.
"""

from __future__ import annotations

import pytest
import torch

import gradlens
from gradlens.probes import GradStats
from gradlens.report import write_report
from tests.tiny_models import tiny_bert

pytest.importorskip("transformers")


def _train(path, steps: int = 3):
    model = tiny_bert(dropout=0.0)
    model.bert.embeddings.requires_grad_(False)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    data = torch.Generator().manual_seed(5)
    norms = []
    session = gradlens.attach(model, optimizer, path, probes=[GradStats()]) if path else None
    for _ in range(steps):
        x, y = torch.randint(0, 100, (4, 10), generator=data), torch.randint(0, 3, (4,), generator=data)
        optimizer.zero_grad()
        model(input_ids=x, labels=y).loss.backward()
        norms.append({n: float(p.grad.double().norm()) for n, p in model.named_parameters() if p.grad is not None})
        optimizer.step()
    if session:
        session.close()
    return model, norms


def test_frozen_embeddings_are_listed_not_recorded_and_training_is_unchanged(tmp_path):
    path = tmp_path / "frozen.h5"
    probed, norms = _train(path)
    bare, _ = _train(None)
    for (name, a), (_, b) in zip(probed.state_dict().items(), bare.state_dict().items(), strict=True):
        assert torch.equal(a, b), name

    run = gradlens.load(path)
    frozen = [row["name"] for row in run.meta["parameters"] if not row["trainable"]]
    assert frozen == [n for n, p in probed.named_parameters() if not p.requires_grad]
    assert frozen and all(name.startswith("bert.embeddings.") for name in frozen)
    table = run.frame("grad_stats").query("quantity == 'norm'")
    assert set(table["layer"]) == set(norms[0]) and not set(table["layer"]) & set(frozen)
    for step, expected in enumerate(norms):
        at = table[table["step"] == step].set_index("layer")["value"]
        for name, value in expected.items():
            assert at[name] == pytest.approx(value, rel=1e-5), (step, name)

    page = write_report([run], tmp_path / "frozen.html")
    text = open(page, encoding="utf-8").read()
    assert "frozen" in text and "bert.embeddings" in text.replace("<wbr>", "")
