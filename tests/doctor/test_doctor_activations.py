"""Activation rules on synthetic runs carrying the ``activation_stats`` probe contract: dead and saturated units
per activation module, from the step they appear, with severity by fraction; a transient dip is no finding;
without the probe the rules are said to be unchecked."""

from __future__ import annotations

import numpy as np
import pytest
from doctor_runs import ACTIVATIONS, STEPS, activation_probe, by_rule, load, probes_meta, write

from gradlens.doctor import diagnose, verdict
from gradlens.doctor.activations import UNITS_MIN_STEPS

KINDS = {"act0": "relu", "act1": "relu", "act2": "tanh"}


def run_with(tmp_path, name="run", **fractions):
    probe = activation_probe(**fractions)
    return load(write(tmp_path, name, probes=[probe], meta={"probes": probes_meta([probe], KINDS)}))


def test_most_units_dead_in_every_layer_is_severe(tmp_path):
    dead = np.zeros((len(STEPS), len(ACTIVATIONS)))
    dead[10:, :] = 0.8  # the case: 80 % of the ReLU units dead in every hidden layer
    findings = diagnose(run_with(tmp_path, dead=dead))
    (finding,) = by_rule(findings, "dead_units")
    assert finding.severity == "severe"  # most units (80 % on average) are dead
    assert finding.step == 10 and set(finding.layers) == set(ACTIVATIONS)
    assert finding.title.startswith("80% of the units in act0 are dead") and "(relu)" in finding.evidence
    assert finding.values["mean_fraction"] == pytest.approx(0.8)
    assert finding.fixes[0].change == {"kind": "lr", "factor": 0.1}  # died during training
    assert finding.fixes[1].change == {"kind": "activation", "to": "leaky_relu"}
    assert verdict(findings).exit_status == 1


def test_half_a_layer_dead_is_a_warning_and_dead_at_init_asks_for_initialisation(tmp_path):
    dead = np.zeros((len(STEPS), len(ACTIVATIONS)))
    dead[:, 1] = 0.6
    (finding,) = by_rule(diagnose(run_with(tmp_path, dead=dead)), "dead_units")
    assert finding.severity == "warning" and finding.layers == ("act1",) and finding.step == 0
    assert finding.fixes[0].change == {"kind": "init"}


def test_a_transient_dip_is_no_finding(tmp_path):
    dead = np.full((len(STEPS), len(ACTIVATIONS)), 0.2)
    dead[8 : 8 + UNITS_MIN_STEPS - 6, 0] = 0.56  # a net finding its scale: units come back within ~15 steps
    dead[-3:, 0] = 0.56  # and at the end, for three records only
    assert by_rule(diagnose(run_with(tmp_path, dead=dead)), "dead_units") == []


def test_saturated_units(tmp_path):
    saturated = np.zeros((len(STEPS), len(ACTIVATIONS)))
    saturated[:, 2] = 0.95
    (finding,) = by_rule(diagnose(run_with(tmp_path, saturated=saturated)), "saturated_units")
    assert finding.severity == "severe" and finding.layers == ("act2",) and finding.step == 0
    assert "(tanh)" in finding.evidence and finding.fixes[0].change == {"kind": "init"}


def test_without_activation_statistics_the_rules_are_said_unchecked(tmp_path):
    findings = diagnose(load(write(tmp_path)))
    (unchecked,) = [f for f in findings if f.rule == "not_checked" and "activation" in f.title]
    assert "dead_units" in unchecked.evidence and "F.relu" in unchecked.evidence
    assert "activation rules" in verdict(findings).text
