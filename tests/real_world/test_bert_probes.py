"""The Jacobian probes on a tiny randomly initialised Hugging Face BERT, against float64 brute force.

Issue 11.6: σ on ``[B, T, H]`` activations has one ratio per hidden unit (the T token positions are the
positions p of eq. 5), equal to explicit loops over the full Jacobian. Issue 11.7: ``InterlayerCushion`` on a
``BertLayer`` works with eager and with SDPA attention (no forward-mode AD for CPU flash attention: the
reverse-mode route is taken) and equals the full per-sample Jacobian. LayerCushion on Linear layers applied to
every token equals the explicit operator matrix.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import gradlens
from gradlens.probes import DominantFlow, InterlayerCushion, LayerCushion
from gradlens.spec import LayerSpec, ModelSpec
from tests.tiny_models import tiny_bert as _tiny_bert

transformers = pytest.importorskip("transformers")

TOKENS, HIDDEN = 8, 64
ACTIVATIONS = ("bert.embeddings", "bert.encoder.layer.0")
FINAL = "bert.encoder.layer.1"
LINEARS = ("bert.encoder.layer.0.attention.self.query", "bert.encoder.layer.0.intermediate.dense")


def tiny_bert(attention: str) -> nn.Module:
    return _tiny_bert(attention=attention).double()


def loss_fn(output, y):
    return nn.functional.cross_entropy(output.logits, y)


def record(attention: str, probes: list, tmp_path) -> tuple[nn.Module, tuple, gradlens.Run]:
    """One optimizer step at learning rate 0 with ``probes`` attached; the model in eval mode (no dropout)."""
    model = tiny_bert(attention).eval()
    generator = torch.Generator().manual_seed(1)
    batch = (torch.randint(0, 100, (2, TOKENS), generator=generator), torch.tensor([0, 2]))
    spec = ModelSpec(
        layers=(*(LayerSpec(n) for n in LINEARS), LayerSpec("classifier")),
        activations=ACTIVATIONS,
        final_activation=FINAL,
        blocks=("bert.encoder.layer.0",),
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    path = tmp_path / f"{attention}.h5"
    with gradlens.attach(model, optimizer, path, probes=probes, probe_batch=batch, loss_fn=loss_fn, spec=spec):
        loss_fn(model(batch[0]), batch[1]).backward()
        optimizer.step()
    return model, batch, gradlens.load(path)


def hidden_states(model: nn.Module, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
    """Outputs of the embeddings and of both layers, by forward hooks (independent of the session)."""
    seen, handles = {}, []
    for name in (*ACTIVATIONS, FINAL):
        module = model.get_submodule(name)
        handles.append(module.register_forward_hook(lambda m, a, o, name=name: seen.setdefault(name, o)))
    output = model(tokens)
    for handle in handles:
        handle.remove()
    seen["output"] = output
    return seen


def reference_ratios(rest, act: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """r ``[B, H]`` from the full Jacobian ∂a^(L)/∂a^(ℓ) of each sample ``[T, H, T, H]``:
    Θ_ijp = Σ_q ∂a^(L)_qj/∂a_pi ∂L/∂a^(L)_qj, r_i = mean_p |Θ_iip| / |Σ_{j≠i} Θ_ijp| (0/0 := 0)."""
    off = 1 - torch.eye(HIDDEN, dtype=torch.float64)
    rows = []
    for b in range(act.shape[0]):
        jac = torch.autograd.functional.jacobian(lambda a: rest(a[None])[0], act[b].detach(), vectorize=True)
        theta = torch.einsum("qjpi,qj->ijp", jac, grad[b])
        diagonal = theta.diagonal(dim1=0, dim2=1).T.abs()  # [i, p]
        others = (theta * off[:, :, None]).sum(dim=1).abs()
        terms = diagonal / others
        terms = torch.where((diagonal == 0) & (others == 0), torch.zeros_like(terms), terms)
        rows.append(terms.mean(dim=1))
    return torch.stack(rows)


def test_sigma_has_one_entry_per_hidden_unit_and_equals_brute_force(tmp_path):
    model, (tokens, labels), run = record("eager", [DominantFlow()], tmp_path)
    _, r, _, _ = run.array("dominant_flow", "r")
    _, sigma, _, _ = run.array("dominant_flow", "sigma")
    _, dims, _, _ = run.array("dominant_flow", "feature_dim")
    assert r.shape == (1, 2, 2, HIDDEN) and list(dims[0]) == [2, 2]  # hidden units, not the 8 token positions

    seen = hidden_states(model, tokens)
    (grad,) = torch.autograd.grad(loss_fn(seen["output"], labels), seen[FINAL])
    layers = model.bert.encoder.layer

    def after_embeddings(h):
        return layers[1](layers[0](h))

    for row, (name, rest) in enumerate(((ACTIVATIONS[0], after_embeddings), (ACTIVATIONS[1], layers[1]))):
        expected = reference_ratios(rest, seen[name], grad)
        np.testing.assert_allclose(r[0, row], expected.numpy(), rtol=1e-9, atol=1e-300)
        assert sigma[0, row] == pytest.approx((expected > 1).double().mean().item(), abs=1e-15)


@pytest.mark.parametrize(("attention", "reverse"), [("eager", 0.0), ("sdpa", 1.0)])
def test_interlayer_cushion_on_a_bert_layer_equals_the_full_jacobian(tmp_path, attention, reverse):
    probes = [InterlayerCushion(method="exact"), LayerCushion()]
    model, (tokens, _), run = record(attention, probes, tmp_path)
    _, mu, _, _ = run.array("interlayer_cushion", "mu")
    _, route, _, _ = run.array("interlayer_cushion", "reverse")
    assert route[0, 0] == reverse  # SDPA on CPU has no forward-mode derivative: the reverse route
    layer = model.bert.encoder.layer[0]
    with torch.no_grad():
        x = model.bert.embeddings(tokens)
    n = TOKENS * HIDDEN
    expected = []
    for sample in x:
        jac = torch.autograd.functional.jacobian(lambda t: layer(t[None])[0], sample, vectorize=True)
        jac = jac.reshape(n, n)
        expected.append(n**0.5 * (jac @ sample.flatten()).norm() / (jac.norm() * sample.norm()))
    np.testing.assert_allclose(mu[0, 0], torch.stack(expected).numpy(), rtol=1e-9)
    # layer cushions of Linear layers acting on every token: A = I_T ⊗ W, ‖A‖_F = √T ‖W‖_F
    _, layer_mu, _, labels = run.array("layer_cushion", "mu")
    query = model.get_submodule(LINEARS[0]).weight.detach()
    flat = x.flatten(1)
    operator = torch.kron(torch.eye(TOKENS, dtype=torch.float64), query)
    want = (flat @ operator.T).norm(dim=1) / (operator.norm() * flat.norm(dim=1))
    np.testing.assert_allclose(layer_mu[0, labels["layer"].index(LINEARS[0])], want.numpy(), rtol=1e-12)
