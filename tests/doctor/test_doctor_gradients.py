"""Gradient rules on synthetic runs with the defect planted: vanishing/exploding through depth (Theil–Sen
decades), exploding by absolute size (ρ = ‖g‖/√(2·fan_in) and the first loss against ln K), spikes and growth
of the global norm, layers with exactly zero gradient; each with its first step and layers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from doctor_runs import LAYERS, STEPS, by_rule, healthy_grads, load, loud, parameters, write

from gradlens.doctor import depth_decades, diagnose
from gradlens.doctor.gradients import SIZE_WARN_RHO, depth_profile


def theil_sen_decades(y) -> float:
    """Brute-force reference: −(K−1) × the median of all pairwise slopes of y over its index."""
    slopes = [(y[j] - y[i]) / (j - i) for i in range(len(y)) for j in range(i + 1, len(y))]
    return -float(np.median(slopes)) * (len(y) - 1)


def test_depth_decades_is_theil_sen_and_ignores_one_odd_layer():
    rng = np.random.default_rng(3)
    y = rng.normal(size=9)
    assert depth_decades(y) == pytest.approx(theil_sen_decades(y))
    rows = rng.normal(size=(4, 7))
    assert depth_profile(rows) == pytest.approx([theil_sen_decades(r) for r in rows])
    line = np.linspace(-8, -2, 7)
    assert depth_decades(line) == pytest.approx(-6)
    odd = line.copy()
    odd[0] = -20  # one odd first layer moves the two-end ratio by 12 decades, the fit by little
    assert abs(depth_decades(odd) + 6) < 1.5


def test_healthy_runs_with_several_seeds_stay_silent(tmp_path):
    for seed in range(5):  # 10 % noise per layer: no false alarm from noise
        run = load(write(tmp_path, f"seed{seed}", grads=healthy_grads(seed=seed)))
        assert loud(diagnose(run)) == [], seed


@pytest.mark.parametrize("decades, severity", [(8.0, "severe"), (4.0, "warning"), (2.0, None)])
def test_vanishing_gradients(tmp_path, decades, severity):
    grads = healthy_grads()
    depth = np.linspace(-decades, 0, len(LAYERS))  # first layer 10^-decades of the last
    for q in ("mean", "mean_abs", "norm", "max_abs"):
        grads[q] = grads[q] * 10.0**depth
    found = by_rule(diagnose(load(write(tmp_path, grads=grads))), "vanishing")
    if severity is None:
        assert found == []
        return
    (finding,) = found
    assert finding.severity == severity and finding.step == 0
    median = np.median([theil_sen_decades(np.log10(row)) for row in grads["mean_abs"]])
    assert abs(median + decades + np.log10(2)) < 0.2  # the healthy base rises ×2 from first to last
    assert f"{median:+.1f} decades" in finding.title
    # the layers ≥ 3 decades below the last, in forward order
    below = [n for n, d in zip(LAYERS, depth + np.log10(np.linspace(1, 2, 6)), strict=True) if d - np.log10(2) <= -3]
    assert list(finding.layers) == below and finding.layers[0] == "fc0.weight"
    assert f"step 0: fc0.weight {grads['mean_abs'][0, 0]:.3g}" in finding.evidence
    assert "trend over training +0.0 decades (steady)" in finding.evidence
    assert finding.fixes[0].change["kind"] == "residual"  # no residual layer in the table: add one first


def test_vanishing_trend_is_reported(tmp_path):
    grads = healthy_grads()
    for n, step in enumerate(STEPS):  # from 4 decades at step 0 to 7 decades at step 39: worsening by 3
        grads["mean_abs"][n] = 1e-2 * 10.0 ** np.linspace(-(4 + 3 * step / 39), 0, len(LAYERS))
    (finding,) = by_rule(diagnose(load(write(tmp_path, grads=grads))), "vanishing")
    assert "trend over training -3.0 decades (worsening)" in finding.evidence
    assert "(fit over 6 weights -4.0 decades)" in finding.evidence and "-7.0 decades)" in finding.evidence


def test_exploding_gradients_between_layers(tmp_path):
    grads = healthy_grads()
    grads["mean_abs"] = grads["mean_abs"] * 10.0 ** np.linspace(7, 0, len(LAYERS))
    (finding,) = by_rule(diagnose(load(write(tmp_path, grads=grads))), "exploding")
    median = np.median([theil_sen_decades(np.log10(row)) for row in grads["mean_abs"]])
    assert finding.severity == "severe" and f"{median:+.1f} decades" in finding.title and median > 6
    assert finding.fixes[0].change["kind"] == "init"


def test_exploding_by_size_from_the_fan_in_bound(tmp_path):
    # a balanced explosion: every layer ×1e4 (no depth profile), fan-in 4 (shape [4, 4])
    grads = healthy_grads()
    grads["norm"] = grads["norm"] * 1e4
    run = load(write(tmp_path, grads=grads, parameters=parameters()))
    findings = diagnose(run)
    (finding,) = by_rule(findings, "exploding_size")
    rho = grads["norm"] / math.sqrt(2 * 4)  # ‖g‖ / √(2·fan_in), the brute-force bound
    assert finding.values["rho"] == pytest.approx(rho[0].max())
    assert rho[0].max() >= SIZE_WARN_RHO and finding.step == 0
    assert finding.layers[0] == LAYERS[int(np.argmax(rho[0]))]
    assert finding.values["global_norm"] == pytest.approx(np.sqrt((grads["norm"][0] ** 2).sum()))
    assert by_rule(findings, "vanishing") == [] and by_rule(findings, "exploding") == []
    assert finding.fixes[0].change["kind"] == "init"  # too large at the first step: the scale, not training
    # a tenth of the warning bound is no finding (e.g. a loss summed over a batch of ~100 samples)
    grads["norm"] = np.full_like(grads["norm"], SIZE_WARN_RHO / 10 * math.sqrt(2 * 4))
    calm = diagnose(load(write(tmp_path, "calm", grads=grads, parameters=parameters())))
    assert by_rule(calm, "exploding_size") == []


def test_exploding_forward_signal_from_the_first_loss(tmp_path):
    # the balanced explosion: the loss starts at 8.4e4 on 10 classes (ln 10 = 2.30)
    scalars = [(s, "loss", 8.4e4 * 0.9**s) for s in STEPS]
    run = load(write(tmp_path, scalars=scalars, meta={"num_classes": 10}))
    (finding,) = by_rule(diagnose(run), "exploding_size")
    assert finding.step == 0 and "first loss 8.4e+04" in finding.evidence
    assert f"{8.4e4 / math.log(10):.3g}× ln K" in finding.evidence


def test_exploding_trend_of_the_global_norm(tmp_path):
    grads = healthy_grads()
    # 3.5 decades of smooth growth: the running median lags 10 records (0.9 decade, < 10×): no spike
    grads["norm"] = grads["norm"] * 10.0 ** np.linspace(0, 3.5, len(STEPS))[:, None]
    findings = diagnose(load(write(tmp_path, grads=grads)))
    (finding,) = by_rule(findings, "exploding_trend")
    total = np.sqrt((grads["norm"] ** 2).sum(axis=1))
    growth = np.log10(total / np.median(total[:5]))
    assert f"grew by {growth.max():.1f} decades" in finding.title
    assert finding.step == STEPS[int(np.argmax(growth >= 3))]
    assert by_rule(findings, "spike") == []


def test_gradient_norm_spike(tmp_path):
    grads = healthy_grads()
    grads["norm"][25] *= 50
    grads["norm"][25, 3] *= 2  # the largest layer at the spike
    (finding,) = by_rule(diagnose(load(write(tmp_path, grads=grads))), "spike")
    total = np.sqrt((grads["norm"] ** 2).sum(axis=1))
    median = np.median(total[5:25])
    assert finding.severity == "warning" and "1 recorded step" in finding.title
    assert finding.step == 25 and finding.layers == ("fc3.weight",)
    assert f"step 25: G = {total[25]:.3g} vs running median {median:.3g}" in finding.evidence
    assert finding.fixes[0].change == {"kind": "clip", "max_norm": pytest.approx(float(np.median(total)))}


def test_heavy_tailed_norms_are_no_spike(tmp_path):
    # norms that reach 10× their median every few records (a near-converged classifier meeting hard batches)
    grads = healthy_grads()
    grads["norm"][::4] *= 12
    assert by_rule(diagnose(load(write(tmp_path, grads=grads))), "spike") == []


def test_dead_layer_from_its_onset(tmp_path):
    grads = healthy_grads()
    for q in ("mean", "mean_abs", "norm", "max_abs"):
        grads[q][12:, 3] = 0.0
    findings = diagnose(load(write(tmp_path, grads=grads)))
    (finding,) = by_rule(findings, "dead_layer")
    assert finding.severity == "severe" and finding.layers == ("fc3.weight",) and finding.step == 12
    assert "fc3.weight (zero from step 12, 28 of 28 records since)" in finding.evidence
    assert finding.fixes[0].change == {"kind": "lr", "factor": 0.1}  # died during training
    assert by_rule(findings, "nonfinite") == []

