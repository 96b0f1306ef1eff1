"""The labelled scenarios: each a :class:`Knobs` setting, its ground truth measured in the scenario itself
(:class:`Truth`: symptom, layers, onset step) and how its verified fix is judged; :func:`apply_fix` maps a
finding's first :class:`gradlens.doctor.Fix` to a knob change of the same scenario.

Ground truth: structural faults are known from the knobs (a frozen module's parameters from step 0, the
parameters left out of the optimizer, the shuffled labels); measured ones come from what the scenario
recorded itself (:class:`Outcome`): the first step whose loss was not finite, each activation module's dead
and saturated fractions computed from its outputs, the step of the lowest validation loss. Symptoms a run
measures but the scenario was not built for (the loss of a run whose units died stays at chance) are
*measured extras*: they count neither for nor against recall, and a finding of them is no false alarm.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from benchmarks.doctor.harness import Knobs, Outcome

SYMPTOMS: dict[str, frozenset[str]] = {
    "vanishing": frozenset({"vanishing"}),
    "exploding": frozenset({"exploding", "exploding_size", "exploding_trend", "weight_growth"}),
    "spike": frozenset({"spike"}),
    "nonfinite": frozenset({"nonfinite"}),
    "dead_units": frozenset({"dead_units"}),
    "dead_layer": frozenset({"dead_layer"}),
    "saturated": frozenset({"saturated_units"}),
    "frozen_by_mistake": frozenset({"frozen_by_mistake"}),
    "not_in_optimizer": frozenset({"not_in_optimizer"}),
    "unchanged_weights": frozenset({"unchanged_weights"}),
    "no_gradient": frozenset({"no_gradient"}),
    "loss_not_decreasing": frozenset({"loss_not_decreasing"}),
    "loss_unstable": frozenset({"loss_unstable"}),
    "chance_plateau": frozenset({"chance_plateau"}),
    "overfitting": frozenset({"overfitting"}),
    "clipping": frozenset({"clipping_dominates"}),
    "lr_too_high": frozenset({"lr_too_high"}),
    "lr_too_low": frozenset({"lr_too_low"}),
    "amp_skips": frozenset({"amp_skipped_steps"}),
    "probe_errors": frozenset({"probe_error", "probe_disabled"}),
    "run_status": frozenset({"status"}),
}
RULE_SYMPTOM = {rule: symptom for symptom, rules in SYMPTOMS.items() for rule in rules}
UNITS_FRACTION = 0.5  # dead/saturated units: what the doctor's warning threshold means, measured directly


@dataclass(frozen=True)
class Truth:
    """One fault of a run: its symptom, the layers it is in (None: the run as a whole) and its onset step."""

    symptom: str
    layers: tuple[str, ...] | None
    onset: int


@dataclass(frozen=True)
class Scenario:
    """A labelled run.

    Attributes:
        name: short id.
        knobs: what the scenario trains.
        truths: the faults it was built with, from what it measured (empty: a healthy run).
        accept: other symptoms that follow from the fault in this run (not counted for recall).
        judge: how the verified fix is judged: ``"loss"`` (training loss ends lower), ``"val"`` (validation
            loss ends lower), ``"same"`` (a fault that does not change training: the loss is not higher),
            None (no knob fixes it: a killed process).
        kind: ``train``, ``killed`` or ``interrupted``.
        ci: part of the test suite's subset.
    """

    name: str
    knobs: Knobs
    truths: Callable[[Outcome], list[Truth]]
    accept: frozenset[str] = frozenset()
    judge: str | None = "loss"
    kind: str = "train"
    ci: bool = False

    @property
    def healthy(self) -> bool:
        return self.truths is _HEALTHY


def _HEALTHY(outcome: Outcome) -> list[Truth]:
    return []


def sustained(column: np.ndarray, threshold: float) -> int | None:
    """First step from which ``column >= threshold`` at >= 90 % of the steps, the last included."""
    above = np.nan_to_num(column) >= threshold
    if not len(above) or not above[-1]:
        return None
    held = np.cumsum(above[::-1])[::-1] >= 0.9 * np.arange(len(above), 0, -1)
    starts = np.flatnonzero(above & held)
    return int(starts[0]) if len(starts) else None


def measured_units(outcome: Outcome, symptom: str) -> list[Truth]:
    """Dead (or saturated) units measured from the activations: the modules at >= 50 %, from when."""
    values = outcome.dead if symptom == "dead_units" else outcome.saturated
    found = [(outcome.act_labels[i], sustained(values[:, i], UNITS_FRACTION)) for i in range(values.shape[1])]
    found = [(label, start) for label, start in found if start is not None]
    if not found:
        return []
    return [Truth(symptom, tuple(label for label, _ in found), min(start for _, start in found))]


def first_nonfinite_loss(outcome: Outcome) -> list[Truth]:
    bad = np.flatnonzero(~np.isfinite(outcome.losses))
    return [Truth("nonfinite", None, int(bad[0]))] if len(bad) else []


def at_chance(outcome: Outcome) -> list[Truth]:
    """The loss of the last tenth of the steps within 10 % of ln 10 (the blobs and digits have 10 classes)."""
    tail = outcome.losses[-max(1, len(outcome.losses) // 10):]
    level = math.log(10)
    if np.isfinite(tail).all() and level * 0.9 <= float(np.median(tail)) <= 1.5 * level:
        return [Truth("chance_plateau", None, 0)]
    return []


def measured_extras(outcome: Outcome) -> set[str]:
    """Symptoms the run measured itself whatever it was built for."""
    truths = measured_units(outcome, "dead_units") + measured_units(outcome, "saturated")
    if outcome.knobs.model in ("mlp", "cnn", "resnet") and outcome.knobs.data in ("blobs", "digits"):
        truths += at_chance(outcome)
    truths += first_nonfinite_loss(outcome)
    return {t.symptom for t in truths}


def tolerance(outcome: Outcome) -> int:
    """How far a found onset may lie from the true one: 5 steps or 5 % of the run, two validation periods."""
    return max(5, int(0.05 * outcome.knobs.steps), 2 * outcome.knobs.val_every)


def _params(*modules: str) -> tuple[str, ...]:
    return tuple(f"{m}.{p}" for m in modules for p in ("weight", "bias"))


def _val_minimum(outcome: Outcome) -> list[Truth]:
    steps, values = zip(*outcome.val, strict=True)
    return [Truth("overfitting", None, int(steps[int(np.argmin(values))]))]


def _unstable(outcome: Outcome) -> list[Truth]:
    """The first step whose loss (trailing median of 5) is twice its running minimum."""
    losses = outcome.losses
    smooth = np.array([np.median(losses[max(0, i - 4): i + 1]) for i in range(len(losses))])
    low = np.minimum.accumulate(smooth)
    bad = np.flatnonzero(smooth >= 2 * low)
    return [Truth("loss_unstable", None, int(bad[0]))] if len(bad) else []


def _t(symptom: str, layers: tuple[str, ...] | None = None, onset: int = 0) -> Callable[[Outcome], list[Truth]]:
    return lambda outcome: [Truth(symptom, layers, onset)]


def _all(*makers: Callable[[Outcome], list[Truth]]) -> Callable[[Outcome], list[Truth]]:
    return lambda outcome: [t for make in makers for t in make(outcome)]


DIVERGES = frozenset({"nonfinite", "exploding", "spike", "loss_unstable", "loss_not_decreasing", "lr_too_high"})
STUCK = frozenset({"chance_plateau", "loss_not_decreasing", "lr_too_low", "dead_layer", "unchanged_weights"})

SCENARIOS: tuple[Scenario, ...] = (
    # --- healthy and varied -------------------------------------------------------------------------------
    Scenario("mlp", Knobs(), _HEALTHY, ci=True),
    Scenario("cnn_bn", Knobs(model="cnn", data="digits", lr=0.05), _HEALTHY),
    Scenario("resnet", Knobs(model="resnet", data="digits", lr=0.05), _HEALTHY),
    Scenario("transformer", Knobs(model="transformer", data="tokens", optimizer="adamw", lr=3e-3), _HEALTHY,
             ci=True),
    Scenario("finetune_frozen_backbone", Knobs(depth=3, pretrain=300, new_head=True,
                                               freeze=("stem", "hidden.0", "hidden.1", "hidden.2")), _HEALTHY),
    Scenario("small_noisy_batches", Knobs(batch=4, lr=0.01, steps=300), _HEALTHY),
    Scenario("warmup_cosine", Knobs(schedule="warmup_cosine", lr=0.1, steps=200), _HEALTHY),
    Scenario("converged", Knobs(pretrain=600, lr=1e-3), _HEALTHY, ci=True),
    Scenario("adamw_weight_decay", Knobs(optimizer="adamw", lr=3e-3, weight_decay=0.05), _HEALTHY),
    Scenario("gan_two_optimizers", Knobs(model="gan", lr=2e-3, steps=200, batch=64), _HEALTHY, ci=True),
    Scenario("grad_accumulation", Knobs(accumulation=4, batch=16), _HEALTHY),
    Scenario("tanh_xavier", Knobs(activation="tanh", init="xavier", depth=3), _HEALTHY),
    Scenario("with_validation", Knobs(val_every=10), _HEALTHY),
    Scenario("sane_clipping", Knobs(clip=5.0), _HEALTHY),
    Scenario("amp", Knobs(amp=True), _HEALTHY),
    Scenario("deep_residual", Knobs(depth=16, init="default", residual=True, norm=True), _HEALTHY),
    Scenario("deep_layernorm", Knobs(depth=8, norm=True), _HEALTHY),
    # harder healthy runs: a large step a BatchNorm net tolerates, deep GELU, batches of two with Adam
    Scenario("cnn_high_lr", Knobs(model="cnn", data="digits", lr=0.3), _HEALTHY),
    Scenario("deep_gelu_layernorm", Knobs(depth=8, activation="gelu", norm=True), _HEALTHY),
    Scenario("tiny_batches_adam", Knobs(batch=2, optimizer="adam", lr=1e-3, steps=300), _HEALTHY),
    # --- one fault each --------------------------------------------------------------------------------------
    Scenario("vanishing_deep_relu", Knobs(depth=16, init="default"), _t("vanishing", ("stem.weight",)),
             accept=STUCK),
    Scenario("vanishing_sigmoid", Knobs(depth=8, activation="sigmoid"), _t("vanishing", ("stem.weight",)),
             accept=STUCK),
    Scenario("exploding_balanced", Knobs(depth=10, init_gain=2.0), _t("exploding"), accept=DIVERGES, ci=True),
    Scenario("nan_inputs", Knobs(nan_at=60), first_nonfinite_loss, accept=DIVERGES, ci=True),
    Scenario("lr_huge_sgd", Knobs(lr=3.0), _t("lr_too_high"), accept=DIVERGES | STUCK),
    Scenario("lr_huge_adam", Knobs(optimizer="adam", lr=0.5), _t("lr_too_high"), accept=DIVERGES | STUCK),
    Scenario("dead_relu_bias", Knobs(depth=3, width=64, bias_init=-1.0),
             lambda o: measured_units(o, "dead_units"), accept=STUCK, ci=True),
    Scenario("all_relu_dead", Knobs(depth=3, bias_init=-5.0),
             _all(lambda o: measured_units(o, "dead_units"), _t("dead_layer", ("stem.weight",))), accept=STUCK),
    Scenario("dying_relu_adam", Knobs(optimizer="adam", lr=0.1, depth=3, width=64, steps=200),
             lambda o: measured_units(o, "dead_units"), accept=STUCK | DIVERGES),
    Scenario("saturated_tanh", Knobs(depth=3, activation="tanh", bias_init=5.0),
             lambda o: measured_units(o, "saturated"), accept=STUCK | {"vanishing"}),
    Scenario("frozen_middle_layer", Knobs(depth=3, optimizer="adam", lr=3e-3, freeze=("hidden.1.fc",)),
             _t("frozen_by_mistake", _params("hidden.1.fc")), ci=True),
    Scenario("only_head_in_optimizer", Knobs(exclude_from_optimizer=("stem", "hidden")),
             _t("not_in_optimizer", _params("stem", "hidden.0.fc", "hidden.1.fc"))),
    Scenario("zero_lr_group", Knobs(zero_lr=("stem",)), _t("unchanged_weights", _params("stem"))),
    Scenario("unused_module", Knobs(unused_module=True), _t("no_gradient", _params("spare")), judge="same"),
    Scenario("lr_tiny", Knobs(lr=1e-6), _t("lr_too_low"), accept=STUCK),
    Scenario("stuck_high_loss", Knobs(lr=1e-6, init_gain=2.5, steps=250),
             _all(_t("loss_not_decreasing"), _t("lr_too_low")), accept=STUCK | {"exploding"}),
    Scenario("labels_shuffled", Knobs(shuffle_labels=True, steps=300), _t("chance_plateau"), ci=True),
    Scenario("overfitting", Knobs(train_size=64, width=128, optimizer="adam", lr=1e-2, steps=150, val_every=5),
             _val_minimum, judge="val"),
    Scenario("clip_tiny", Knobs(clip=1e-3), _t("clipping"), accept=STUCK, ci=True),
    Scenario("lr_jump", Knobs(lr_jump_at=60, lr_jump=8.0), _unstable, accept=DIVERGES | STUCK | {"dead_units"}),
    Scenario("bad_batch_spike", Knobs(spike_at=60), _t("spike", None, 60), accept=DIVERGES | STUCK),
    Scenario("amp_overflow", Knobs(amp=True, inf_every=3), _t("amp_skips", None, 21)),
    Scenario("broken_probe", Knobs(broken_probe=True), _t("probe_errors", ("broken",)), judge="same"),
    Scenario("crashed", Knobs(crash_at=60), _t("run_status", None, 60), judge=None),
    Scenario("killed", Knobs(steps=40), _t("run_status", None, 39), judge=None, kind="killed"),
    Scenario("interrupted", Knobs(steps=40), _t("run_status", None, 39), judge=None, kind="interrupted"),
    # --- a second variant of each symptom, another architecture or size -----------------------------------
    Scenario("exploding_wide", Knobs(depth=6, width=128, init_gain=2.5), _t("exploding"), accept=DIVERGES),
    Scenario("spike_deeper", Knobs(depth=4, width=64, spike_at=80, steps=150), _t("spike", None, 80),
             accept=DIVERGES | STUCK),
    Scenario("nan_cnn", Knobs(model="cnn", data="digits", nan_at=40), first_nonfinite_loss, accept=DIVERGES),
    Scenario("dead_cnn_channels", Knobs(model="cnn", data="digits", bias_init=-5.0),
             _all(lambda o: measured_units(o, "dead_units"), _t("dead_layer", ("stem.weight",))), accept=STUCK),
    Scenario("saturated_sigmoid", Knobs(depth=2, width=64, activation="sigmoid", init="xavier", bias_init=8.0),
             lambda o: measured_units(o, "saturated"), accept=STUCK | {"vanishing"}),
    Scenario("frozen_cnn_block", Knobs(model="cnn", data="digits", freeze=("blocks.0.conv",)),
             _t("frozen_by_mistake", _params("blocks.0.conv"))),
    Scenario("cnn_head_not_in_optimizer", Knobs(model="cnn", data="digits", exclude_from_optimizer=("head",)),
             _t("not_in_optimizer", _params("head")), accept=STUCK),
    Scenario("cnn_zero_lr_block", Knobs(model="cnn", data="digits", zero_lr=("blocks.1",)),
             _t("unchanged_weights", _params("blocks.1.conv", "blocks.1.bn"))),
    Scenario("cnn_unused_module", Knobs(model="cnn", data="digits", unused_module=True),
             _t("no_gradient", _params("spare")), judge="same"),
    Scenario("stuck_high_loss_wide", Knobs(depth=4, width=64, lr=1e-8, init_gain=2.0, steps=250),
             _all(_t("loss_not_decreasing"), _t("lr_too_low")), accept=STUCK | {"exploding"}),
    Scenario("lr_jump_deeper", Knobs(depth=4, width=64, lr_jump_at=60, lr_jump=10.0), _unstable,
             accept=DIVERGES | STUCK | {"dead_units"}),
    Scenario("cnn_labels_shuffled", Knobs(model="cnn", data="digits", shuffle_labels=True, steps=300),
             _t("chance_plateau")),
    Scenario("overfitting_deeper", Knobs(depth=3, width=256, train_size=32, optimizer="adam", lr=1e-2, steps=150,
                                         val_every=5), _val_minimum, judge="val"),
    Scenario("cnn_clip_tiny", Knobs(model="cnn", data="digits", clip=1e-3), _t("clipping"), accept=STUCK),
    Scenario("cnn_amp_overflow", Knobs(model="cnn", data="digits", amp=True, inf_every=3),
             _t("amp_skips", None, 21)),
    Scenario("transformer_broken_probe", Knobs(model="transformer", data="tokens", optimizer="adamw", lr=3e-3,
                                               broken_probe=True), _t("probe_errors", ("broken",)), judge="same"),
    # --- the live doctor's triggered detail: activation statistics every 10 steps, every step after the NaN --
    Scenario("nan_detail", Knobs(nan_at=60, act_every=10, histograms=True), first_nonfinite_loss, accept=DIVERGES),
)


def apply_fix(knobs: Knobs, change: dict) -> Knobs:
    """The scenario with a fix applied: ``change`` is a :class:`gradlens.doctor.Fix` ``change``.

    Raises:
        ValueError: a change kind no knob stands for (a fix that cannot be verified by rerunning).
    """
    kind = change.get("kind")
    if kind == "lr":
        return replace(knobs, lr=knobs.lr * float(change["factor"]))
    if kind == "init":
        return replace(knobs, init="kaiming", init_gain=1.0, bias_init=0.0)
    if kind == "residual":
        return replace(knobs, residual=True)
    if kind == "activation":
        return replace(knobs, activation=str(change["to"]), init="kaiming", bias_init=0.0)
    if kind == "clip":
        return replace(knobs, clip=change.get("max_norm"))
    if kind == "unfreeze":
        return replace(knobs, freeze=())
    if kind == "optimizer_params":
        return replace(knobs, exclude_from_optimizer=(), zero_lr=())
    if kind == "unused":
        return replace(knobs, unused_module=False)
    if kind == "labels":
        return replace(knobs, shuffle_labels=False)
    if kind == "data":
        return replace(knobs, nan_at=None, spike_at=None)
    if kind == "early_stop":
        return replace(knobs, steps=int(change["step"]) + 1)
    if kind == "scaler":
        return replace(knobs, inf_every=0)
    if kind == "probe":
        return replace(knobs, broken_probe=False)
    raise ValueError(f"fix kind {kind!r} has no knob in the scenarios; it cannot be verified by rerunning")


def by_name(name: str) -> Scenario:
    """The scenario called ``name``."""
    for scenario in SCENARIOS:
        if scenario.name == name:
            return scenario
    raise KeyError(f"no scenario {name!r}; scenarios: {[s.name for s in SCENARIOS]}")
