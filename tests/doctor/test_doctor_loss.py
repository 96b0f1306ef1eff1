"""Loss rules: which scalars are taken as the loss (and saying so), not decreasing (beyond noise), stuck at the
chance level ln K (the issue's shuffled labels, 2.303 → 2.248), unstable, overfitting; a converged run and the
losses of a two-player game are not judged."""

from __future__ import annotations

import math

import numpy as np
import pytest
from doctor_runs import STEPS, by_rule, load, loud, write

from gradlens.cli import main
from gradlens.doctor import diagnose

LONG = list(range(300))


def curve(values, name="loss", steps=None):
    return [(s, name, float(v)) for s, v in zip(steps or range(len(values)), values, strict=True)]


def test_loss_not_decreasing(tmp_path):
    scalars = curve(2.9 + 0.01 * np.sin(np.array(STEPS)))
    (finding,) = by_rule(diagnose(load(write(tmp_path, scalars=scalars))), "loss_not_decreasing")
    assert finding.severity == "warning" and finding.step == 0 and finding.title.startswith("the loss 'loss'")
    assert "'loss' taken as the loss by name" in finding.evidence


def test_a_drop_within_the_noise_is_no_decrease_and_a_clear_drop_is(tmp_path):
    rng = np.random.default_rng(0)
    noisy = 80 * (1 + 0.2 * rng.standard_normal(150))  # flat, noisy: a few % apart by chance
    noisy[-15:] *= 0.96
    assert by_rule(diagnose(load(write(tmp_path, "flat", scalars=curve(noisy)))), "loss_not_decreasing")
    falling = 80 * np.exp(-np.arange(150) / 100) * (1 + 0.05 * rng.standard_normal(150))
    assert by_rule(diagnose(load(write(tmp_path, "falling", scalars=curve(falling)))), "loss_not_decreasing") == []


def test_a_loss_with_another_name_is_taken_and_said(tmp_path):
    path = write(tmp_path, scalars=curve(2.9 + 0.01 * np.sin(np.array(STEPS)), name="nll"))
    (finding,) = by_rule(diagnose(load(path)), "loss_not_decreasing")
    assert "'nll' taken as the loss by name" in finding.evidence
    named = diagnose(load(path), loss="nll")
    assert "'nll' named as the loss" in by_rule(named, "loss_not_decreasing")[0].evidence
    with pytest.raises(ValueError, match="no scalar named 'objective_x'.*nll"):
        diagnose(load(path), loss="objective_x")
    assert main(["doctor", "--loss", "objective_x", path]) == 2


def test_no_loss_logged_is_said_with_the_names_seen(tmp_path):
    findings = diagnose(load(write(tmp_path, scalars=curve(np.linspace(0.1, 0.9, 40), name="acc"))))
    (unchecked,) = [f for f in findings if f.rule == "not_checked" and f.title.startswith("loss rules")]
    assert "scalars: acc" in unchecked.evidence and "--loss NAME" in unchecked.evidence


def test_shuffled_labels_stay_at_chance_level(tmp_path):
    # the run: 2.303 → 2.248 on 10 classes; K from meta
    values = 2.303 - 0.055 * (1 - np.exp(-np.arange(300) / 80)) + 0.02 * np.sin(np.arange(300))
    path = write(tmp_path, scalars=curve(values), meta={"num_classes": 10})
    findings = diagnose(load(path))
    (finding,) = by_rule(findings, "chance_plateau")
    assert finding.severity == "severe" and finding.step == 0
    assert finding.values["chance"] == pytest.approx(math.log(10))
    assert "K = 10 from meta[\"num_classes\"]" in finding.evidence
    assert finding.fixes[0].change == {"kind": "labels"}
    assert by_rule(findings, "loss_not_decreasing") == []  # said once, as the severe finding
    assert main(["doctor", path]) == 1
    # K from the user instead: 4 classes (ln 4 = 1.39), the loss is far above: not at chance
    assert by_rule(diagnose(load(path), num_classes=4), "chance_plateau") == []


def test_chance_level_from_the_last_layer_only_when_the_loss_fits_it(tmp_path):
    values = 2.303 - 0.05 * np.arange(300) / 300
    table = [{"name": f"fc{i}", "kind": "linear", "shape": [4, 4], "params": 16} for i in range(5)]
    table.append({"name": "fc5", "kind": "linear", "shape": [10, 4], "params": 40})  # 10 outputs: K = 10
    (finding,) = by_rule(diagnose(load(write(tmp_path, scalars=curve(values), layers=table))), "chance_plateau")
    assert "K = 10 from the output size of the last layer fc5" in finding.evidence
    mse = 0.9 - 0.001 * np.arange(300) / 300  # a loss that does not start near ln K is no cross-entropy over K
    assert by_rule(diagnose(load(write(tmp_path, "mse", scalars=curve(mse)))), "chance_plateau") == []


def test_a_converged_run_is_no_finding(tmp_path):
    rng = np.random.default_rng(1)
    values = 0.02 * (1 + 0.5 * rng.random(300))  # flat, far below ln 10, noisy (small batches)
    findings = diagnose(load(write(tmp_path, scalars=curve(values), meta={"num_classes": 10})))
    assert loud(findings) == [], [f.title for f in loud(findings)]


def test_an_unstable_loss(tmp_path):
    values = np.concatenate([2.3 * np.exp(-np.arange(100) / 20) + 0.2, np.linspace(0.3, 3.0, 50)])
    (finding,) = by_rule(diagnose(load(write(tmp_path, scalars=curve(values), meta={"num_classes": 10}))),
                         "loss_unstable")
    # brute force: trailing medians over w = 7 records (the first value before the start); the level risen from:
    # the running minimum of trailing medians over 3w = 21 records; standard errors from the median absolute
    # deviation of successive differences (where that minimum was, at least their median); a rise ≥ 2× the
    # level and ≥ max(max(first smoothed value, ln 10) / 4, 3 errors), held for w records
    def trailing(width):
        padded = np.concatenate([np.full(width - 1, values[0]), values])
        return [padded[i : i + width] for i in range(150)]

    w = 7
    smooth = np.array([np.median(x) for x in trailing(w)])
    base = np.array([np.median(x) for x in trailing(3 * w)])
    mad = [np.median(np.abs(np.diff(x) - np.median(np.diff(x)))) for x in trailing(w)]
    error = 1.25 * 1.4826 * np.array(mad) / np.sqrt(2) / np.sqrt(w)
    low = np.minimum.accumulate(base)
    at = [max(i for i in range(t + 1) if base[i] <= low[t]) for t in range(150)]
    scale = max(smooth[0], math.log(10))
    noise = [max(error[at[t]], np.median(error)) for t in range(150)]
    above = [smooth[t] >= 2 * low[t] and smooth[t] - low[t] >= max(0.25 * scale, 3 * noise[t]) for t in range(150)]
    first = next(t for t in range(150 - w + 1) if all(above[t : t + w]))
    assert finding.step == first and 100 < first < 125
    assert finding.fixes[0].change == {"kind": "lr", "factor": 0.1}


def test_small_noisy_batches_are_not_unstable(tmp_path):
    rng = np.random.default_rng(2)
    # the mean of 4 per-sample losses, each exponential: Gamma(4)/4 noise (a coefficient of variation of 0.5)
    values = (2.3 * np.exp(-np.arange(300) / 60) + 0.4) * rng.gamma(4.0, 0.25, 300)
    assert by_rule(diagnose(load(write(tmp_path, scalars=curve(values), meta={"num_classes": 10}))),
                   "loss_unstable") == []


def test_overfitting(tmp_path):
    train = curve(2.3 * np.exp(-np.arange(300) / 30))
    val_steps = list(range(0, 300, 20))
    val = [2.3, 1.2, 0.9, 0.8, 0.85, 0.95, 1.05, 1.15, 1.25, 1.3, 1.4, 1.45, 1.5, 1.55, 1.6]
    findings = diagnose(load(write(tmp_path, scalars=train + curve(val, "val_loss", val_steps))))
    (finding,) = by_rule(findings, "overfitting")
    assert finding.step == 60 and finding.severity == "warning"
    assert finding.fixes[0].change == {"kind": "early_stop", "step": 60}
    noisy = [2.3, 1.2, 0.9, 0.8, 0.85, 0.78, 0.82, 0.79, 0.84, 0.8, 0.77, 0.9, 0.79, 0.81, 0.8]
    calm = diagnose(load(write(tmp_path, "calm", scalars=train + curve(noisy, "val_loss", val_steps))))
    assert by_rule(calm, "overfitting") == []
    assert any(f.rule == "not_checked" and f.title == "overfitting" for f in diagnose(load(write(tmp_path, "none"))))


def test_the_losses_of_a_two_player_game_are_not_judged(tmp_path):
    flat = 0.7 + 0.05 * np.sin(np.arange(200))
    scalars = curve(flat, "loss_d") + curve(flat + 0.3, "loss_g")
    assert loud(diagnose(load(write(tmp_path, scalars=scalars)))) == []
