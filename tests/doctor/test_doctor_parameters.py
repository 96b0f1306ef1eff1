"""Parameter rules: never a gradient, frozen by mistake (a middle layer) against fine-tuning recipes (a frozen
prefix, every norm, most of the model), in no optimizer param group, never changed by the optimizer."""

from __future__ import annotations

import numpy as np
from doctor_runs import LAYERS, STEPS, by_rule, healthy_grads, load, parameters, ratio_probe, write

from gradlens.doctor import diagnose


def test_parameter_without_gradient_and_intended_frozen_prefix(tmp_path):
    grads = healthy_grads()
    for q in ("mean", "mean_abs", "norm", "max_abs"):
        grads[q][:, 2] = np.nan
    grads["nonfinite"][:, 2] = -1
    rows = [{"name": "emb.weight", "module": "emb", "kind": "embedding", "shape": [10, 4], "numel": 40,
             "trainable": False}] + parameters()
    findings = diagnose(load(write(tmp_path, grads=grads, parameters=rows)))
    (missing,) = by_rule(findings, "no_gradient")
    assert missing.severity == "warning" and missing.layers == ("fc2.weight",) and missing.step == 0
    assert "fc2.weight: .grad was None at all 40 records" in missing.evidence
    (frozen,) = by_rule(findings, "frozen")  # a frozen prefix (embeddings): a fine-tuning recipe, said as info
    assert frozen.severity == "info" and frozen.evidence == "emb.weight" and "(40 values)" in frozen.title
    assert by_rule(findings, "frozen_by_mistake") == []
    assert by_rule(findings, "nonfinite") == [] and by_rule(findings, "vanishing") == []


def test_a_middle_layer_frozen_by_mistake(tmp_path):
    findings = diagnose(load(write(tmp_path, parameters=parameters(frozen={"fc2.weight"}))))
    (finding,) = by_rule(findings, "frozen_by_mistake")
    assert finding.severity == "warning" and finding.layers == ("fc2.weight",) and finding.step == 0
    assert "fc2 (linear) is frozen while fc1 before it and fc3 after it train" in finding.evidence
    assert finding.fixes[0].change == {"kind": "unfreeze", "parameters": ["fc2.weight"]}


def test_fine_tuning_recipes_are_not_mistakes(tmp_path):
    backbone = parameters(frozen={"fc0.weight", "fc1.weight", "fc2.weight", "fc3.weight"})  # a frozen prefix
    norms = [dict(p, kind="layernorm") if p["name"] in ("fc1.weight", "fc3.weight") else p for p in parameters(
        frozen={"fc1.weight", "fc3.weight"})]  # every norm frozen: one kind throughout
    adapters = parameters(frozen={"fc0.weight", "fc1.weight", "fc3.weight", "fc4.weight"})  # most values frozen
    for name, rows in (("backbone", backbone), ("norms", norms), ("adapters", adapters)):
        findings = diagnose(load(write(tmp_path, name, parameters=rows)))
        assert by_rule(findings, "frozen_by_mistake") == [], name
        assert by_rule(findings, "frozen")[0].severity == "info", name


def test_parameters_outside_the_optimizer(tmp_path):
    findings = diagnose(load(write(tmp_path, parameters=parameters(outside={"fc5.weight"}))))
    (finding,) = by_rule(findings, "not_in_optimizer")
    assert finding.severity == "warning" and finding.layers == ("fc5.weight",)
    assert finding.fixes[0].change == {"kind": "optimizer_params", "parameters": ["fc5.weight"]}
    everything = diagnose(load(write(tmp_path, "all", parameters=parameters(outside=set(LAYERS)))))
    assert by_rule(everything, "not_in_optimizer")[0].severity == "severe"
    unknown = diagnose(load(write(tmp_path, "unknown", parameters=[
        {k: v for k, v in p.items() if k != "in_optimizer"} for p in parameters()])))
    assert any(f.rule == "not_checked" and "optimizer" in f.title for f in unknown)


def test_weights_the_optimizer_never_changes(tmp_path):
    ratio = np.full((len(STEPS), len(LAYERS)), 1e-3)
    update = ratio * 2
    update[:, 0] = 0.0  # a param group with learning rate 0
    findings = diagnose(load(write(tmp_path, probes=[ratio_probe(ratio, update)])))
    (finding,) = by_rule(findings, "unchanged_weights")
    assert finding.severity == "warning" and finding.layers == ("fc0.weight",) and finding.step == 0
    assert "non-zero gradients" in finding.evidence
