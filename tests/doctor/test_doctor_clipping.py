"""Clipping that dominates (the issue's clip_grad_norm_(1e-3) against a natural norm of 0.25), from the clip
scalars of the contract; a constant global norm without them; rare clipping is no finding."""

from __future__ import annotations

import numpy as np
import pytest
from doctor_runs import STEPS, by_rule, healthy_grads, load, write

from gradlens.doctor import diagnose, verdict


def clip_scalars(preclip, max_norm):
    rows = [(s, "loss", 2.3 * np.exp(-s / 15) + 0.1) for s in STEPS]
    rows += [(s, "clip/preclip_norm", float(v)) for s, v in zip(STEPS, preclip, strict=True)]
    rows += [(s, "clip/max_norm", float(max_norm)) for s in STEPS]
    return rows


def test_clipping_every_step_to_nothing_is_severe(tmp_path):
    rng = np.random.default_rng(0)
    preclip = 0.25 * (1 + 0.1 * rng.standard_normal(len(STEPS)))
    meta = {"clipping": {"max_norm": 1e-3, "norm_type": 2.0, "algorithm": "norm", "source": "clip_grad_norm_"}}
    findings = diagnose(load(write(tmp_path, scalars=clip_scalars(preclip, 1e-3), meta=meta)))
    (finding,) = by_rule(findings, "clipping_dominates")
    factor = float(np.median(preclip / 1e-3))
    assert finding.severity == "severe" and finding.step == 0
    natural = np.median(preclip)
    assert f"your clip threshold 0.001 is {factor:.3g}× below the natural norm {natural:.3g}" in finding.title
    assert "40 of 40 steps clipped (set by clip_grad_norm_)" in finding.evidence
    # a threshold that cuts spikes only: 10× (the spike rule's factor) the median pre-clip norm; the norms measured
    # while every step was cut are those of a net that could not train, and grow once it does
    assert finding.fixes[0].change == {"kind": "clip", "max_norm": pytest.approx(10 * natural)}
    assert verdict(findings).exit_status == 1
    # the integrations store the framework's setting in the config: read there too
    lightning = {"config": {"clipping": {"max_norm": 1e-3, "norm_type": 2.0, "algorithm": "norm",
                                         "source": "lightning"}}}
    found = diagnose(load(write(tmp_path, "pl", scalars=clip_scalars(preclip, 1e-3), meta=lightning)))
    assert "(set by lightning)" in by_rule(found, "clipping_dominates")[0].evidence


def test_a_loss_stuck_because_of_clipping_is_told_to_fix_the_clipping_first(tmp_path):
    rows = clip_scalars(np.full(len(STEPS), 0.25), 1e-3)
    rows = [(s, n, 2.30 + 0.01 * np.sin(s)) if n == "loss" else (s, n, v) for s, n, v in rows]  # stays at ln 10
    findings = diagnose(load(write(tmp_path, scalars=rows, meta={"num_classes": 10})))
    (chance,) = by_rule(findings, "chance_plateau")
    assert chance.fixes[0].change["kind"] == "clip" and "gradient clipping cuts 100%" in chance.fixes[0].because
    assert chance.fixes[1].change == {"kind": "labels"}
    assert findings[0].rule == "clipping_dominates"  # the cause leads the verdict, the symptom follows


def test_clipping_half_the_steps_is_a_warning_and_rare_clipping_is_none(tmp_path):
    preclip = np.where(np.arange(len(STEPS)) % 2 == 0, 2.0, 0.5)
    (finding,) = by_rule(diagnose(load(write(tmp_path, scalars=clip_scalars(preclip, 1.0)))), "clipping_dominates")
    assert finding.severity == "warning" and finding.values["share"] == 0.5
    rare = np.where(np.arange(len(STEPS)) % 10 == 0, 2.0, 0.5)
    assert by_rule(diagnose(load(write(tmp_path, "rare", scalars=clip_scalars(rare, 1.0)))), "clipping_dominates") == []


def test_a_constant_global_norm_looks_clipped(tmp_path):
    grads = healthy_grads()
    scale = 1e-3 / np.sqrt((grads["norm"] ** 2).sum(axis=1, keepdims=True))
    grads["norm"] = grads["norm"] * scale  # what clip_grad_norm_(1e-3) leaves for the probe
    (finding,) = by_rule(diagnose(load(write(tmp_path, grads=grads))), "clipping_dominates")
    assert finding.severity == "warning" and "constant at 0.001" in finding.title
