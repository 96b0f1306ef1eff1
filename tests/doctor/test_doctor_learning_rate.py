"""Learning rate from update-to-weight ratios: too high (median of the later records, or steps that replace the
weights), too low (unless the loss learns well), and said unchecked without UpdateRatio."""

from __future__ import annotations

import numpy as np
from doctor_runs import LAYERS, STEPS, by_rule, load, loud, ratio_probe, write

from gradlens.doctor import diagnose

FLAT = [(s, "loss", 2.9 + 0.01 * np.sin(s)) for s in STEPS]  # a loss that does not learn


def test_update_ratios_too_high_and_too_low(tmp_path):
    ratio = np.full((len(STEPS), len(LAYERS)), 1e-3)
    ratio[:, 1] = 0.5  # far too large
    ratio[:, 5] = 1e-7  # frozen in practice
    findings = diagnose(load(write(tmp_path, probes=[ratio_probe(ratio)], scalars=FLAT)))
    (high,) = by_rule(findings, "lr_too_high")
    (low,) = by_rule(findings, "lr_too_low")
    assert high.evidence.startswith("fc1.weight 0.5") and high.severity == "warning" and high.layers == ("fc1.weight",)
    assert high.fixes[0].change == {"kind": "lr", "factor": 0.01}  # 0.5 → 5e-3, near the 3e-3 aimed at
    assert low.evidence.startswith("fc5.weight 1e-07") and low.fixes[0].change == {"kind": "lr", "factor": 1e4}
    healthy = diagnose(load(write(tmp_path, "h", probes=[ratio_probe(np.full_like(ratio, 1e-3))], scalars=FLAT)))
    assert by_rule(healthy, "lr_too_high") == [] and by_rule(healthy, "lr_too_low") == []


def test_a_first_update_larger_than_the_weights_is_severe_even_if_the_net_dies_after(tmp_path):
    ratio = np.full((len(STEPS), len(LAYERS)), 1e-4)  # afterwards the (dead) net barely moves
    ratio[0] = 2.0  # Adam at lr 0.5: the first step is twice the initial weights
    (high,) = by_rule(diagnose(load(write(tmp_path, probes=[ratio_probe(ratio)]))), "lr_too_high")
    assert high.severity == "severe" and high.step == 0 and "1 steps from step 0 replaced the weights" in high.evidence
    several = np.full((len(STEPS), len(LAYERS)), 1e-4)
    several[[3, 5, 6]] = 3.0  # SGD at lr 3: a few steps that replace the weights before the net dies
    (high,) = by_rule(diagnose(load(write(tmp_path, "sgd", probes=[ratio_probe(several)]))), "lr_too_high")
    assert high.severity == "severe" and high.step == 3


def test_a_zero_initialised_head_is_not_too_fast(tmp_path):
    ratio = np.full((len(STEPS), len(LAYERS)), 1e-3)
    ratio[0, 5] = np.nan  # ‖w‖ = 0 at the first step: undefined
    ratio[1:4, 5] = [1.9, 0.93, 0.61]  # the steps of momentum SGD over the sum of the previous ones
    ratio[:, :5] = np.nan  # the only trainable weight (a head on a frozen backbone)
    assert by_rule(diagnose(load(write(tmp_path, probes=[ratio_probe(ratio)]))), "lr_too_high") == []


def test_a_fresh_head_moving_fast_at_first_and_a_converging_run_are_fine(tmp_path):
    ratio = np.full((len(STEPS), len(LAYERS)), 1e-3)
    ratio[:12, 5] = np.linspace(0.3, 0.02, 12)  # a new head's first steps (fine-tuning)
    ratio[:, 2] = 1e-6  # tiny steps ...
    assert loud(diagnose(load(write(tmp_path, probes=[ratio_probe(ratio)])))) == []  # ... of a loss that learns


def test_without_update_ratios_it_is_said(tmp_path):
    (finding,) = [f for f in diagnose(load(write(tmp_path))) if f.rule == "not_checked" and "update" in f.title]
    assert "no UpdateRatio probe" in finding.evidence and "lr_too_high" in finding.evidence


def test_weights_that_grow_tenfold(tmp_path):
    ratio = np.full((len(STEPS), len(LAYERS)), 1e-3)
    grown = ratio_probe(ratio)
    grown.values["weight_norm"] = np.full_like(ratio, 2.0)
    grown.values["weight_norm"][:, 2] = 2.0 * 10 ** np.linspace(0, 1.5, len(STEPS))  # 31.6× by the end
    (finding,) = by_rule(diagnose(load(write(tmp_path, probes=[grown]))), "weight_growth")
    first = int(np.argmax(np.linspace(0, 1.5, len(STEPS)) >= 1.0))
    assert finding.layers == ("fc2.weight",) and finding.step == first and "grew 31.6×" in finding.title
    calm = ratio_probe(ratio)
    calm.values["weight_norm"] = 2.0 * 10 ** np.linspace(0, 0.6, len(STEPS))[:, None] * np.ones_like(ratio)
    assert by_rule(diagnose(load(write(tmp_path, "calm", probes=[calm]))), "weight_growth") == []
