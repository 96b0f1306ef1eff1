"""Rules on the logged loss: not decreasing, unstable, stuck at chance level, overfitting.

Which scalars are losses, the chance level ln K and the robust statistics of a noisy loss series (trailing
medians and their standard errors) are in :mod:`gradlens.doctor.loss_series`. Losses of a two-player game are
not judged by the trend rules.
"""

from __future__ import annotations

import numpy as np

from gradlens.doctor.evidence import Evidence, Scalar
from gradlens.doctor.finding import Finding, Fix, fmt
from gradlens.doctor.loss_series import (  # noqa: F401 (CHANCE_START_TOLERANCE: a threshold of ChancePlateau)
    CHANCE_START_TOLERANCE,
    SMOOTH_MAX_RECORDS,
    SMOOTH_RECORDS,
    chance_level,
    finite,
    is_game,
    median_error,
    no_loss,
    smoothed,
    smoothed_error,
    smoothing_width,
    training_losses,
    validation_losses,
)
from gradlens.doctor.rule import Rule, Unchecked, sustained_from

LOSS_MIN_RECORDS = 20  # fewer finite loss records: trend rules wait (a trend of a few noisy batches is noise)
LOSS_WINDOW_FRACTION = 0.1  # first/last 10 % of a loss's records compared
LOSS_MIN_DROP = 0.02  # the final median must be at least 2 % below the initial one ...
LOSS_NOISE_SIGMAS = 3.0  # ... and three standard errors of the two medians
LOSS_FLAT_SIGMAS = 1.0  # ... and is not said when the drop exceeds LOSS_MIN_DROP by more than one standard error
CONVERGED_FRACTION = 0.25  # a classifier whose loss is below 25 % of ln K has learned: a flat loss is converged
CHANCE_MARGIN_NATS = 0.05  # within 10 % of ln K (at least 0.05 nats) of ln K: at chance
CHANCE_MARGIN_FRACTION = 0.1
UNSTABLE_FACTOR = 2.0  # the smoothed loss rises to twice its running minimum ...
UNSTABLE_MIN_RISE = 0.25  # ... by at least a quarter of its starting level (or of ln K, the larger)
UNSTABLE_BASELINE_WIDTHS = 3  # the minimum is taken of a median over three smoothing windows
LEARNING_FRACTION = 0.5  # a loss that ends at half its start (or less) clearly learns
OVERFIT_RISE = 0.1  # validation loss 10 % above its minimum while the training loss still falls
OVERFIT_MIN_RECORDS = 4
OVERFIT_PERSIST = 3  # the last three validation records all above (1 + OVERFIT_RISE) × the minimum


def _window(values: np.ndarray) -> int:
    return max(1, int(round(LOSS_WINDOW_FRACTION * len(values))))


def learning(ev: Evidence) -> bool | None:
    """Whether a training loss clearly learns: its final median is at most half its initial one, or below
    ``CONVERGED_FRACTION`` ln K (None when no loss has enough records)."""
    losses, _ = training_losses(ev)
    verdicts = []
    for _, scalar in losses:
        _, values = finite(scalar)
        if len(values) >= LOSS_MIN_RECORDS:
            window = _window(values)
            start, end = float(np.median(values[:window])), float(np.median(values[-window:]))
            level, _ = chance_level(ev, values)
            converged = level is not None and end < CONVERGED_FRACTION * level
            verdicts.append(end <= LEARNING_FRACTION * start or converged)
    return any(verdicts) if verdicts else None


def at_chance(ev: Evidence, values: np.ndarray) -> tuple[bool, float | None, str]:
    """Whether a loss ends at chance level: ln K − margin ≤ final median ≤ 1.5 ln K."""
    level, source = chance_level(ev, values)
    if level is None:
        return False, None, source
    end = float(np.median(values[-_window(values):]))
    margin = max(CHANCE_MARGIN_NATS, CHANCE_MARGIN_FRACTION * level)
    return level - margin <= end <= 1.5 * level, level, source


class _LossTrend(Rule):
    """A rule judging each training loss with enough finite records on its own (:meth:`judge`)."""

    reads = "the training loss scalars"

    def check(self, ev: Evidence) -> list[Finding] | Unchecked:
        losses, how = training_losses(ev)
        if not losses:
            return no_loss(ev)
        out = []
        for name, scalar in losses:
            steps, values = finite(scalar)
            if len(values) >= LOSS_MIN_RECORDS and not (is_game(name) and ev.loss is None):
                found = self.judge(ev, name, steps, values, how)
                out += [found] if found is not None else []
        return out

    def judge(self, ev: Evidence, name: str, steps: np.ndarray, values: np.ndarray, how: str) -> Finding | None:
        """The finding on one loss (``steps``/``values`` finite, in order), or None."""
        raise NotImplementedError


class LossNotDecreasing(_LossTrend):
    id = "loss_not_decreasing"
    severity = "warning"
    thresholds = {
        "LOSS_MIN_RECORDS": "a trend judged on fewer loss values is mini-batch noise",
        "LOSS_WINDOW_FRACTION": "medians of the first and last tenth of the records: robust to single batches",
        "LOSS_MIN_DROP": "any run that learns lowers its loss by more than 2 % over training",
        "LOSS_NOISE_SIGMAS": "a drop within three standard errors of the two medians is mini-batch noise",
        "CONVERGED_FRACTION": "a classifier below a quarter of ln K already predicts far above chance: a flat "
        "loss there is a converged run, not a stuck one",
        "LOSS_FLAT_SIGMAS": "'did not decrease' is said when the data show no decrease: the drop is within one "
        "standard error of the 2 % any learning run makes (a flat loss is caught at ≥ 84 % of the checks); a "
        "drop further above is a decrease the noise does not yet make significant (batches of two), not a flat loss",
    }

    def judge(self, ev: Evidence, name: str, steps: np.ndarray, values: np.ndarray, how: str) -> Finding | None:
        window = _window(values)
        first, last = values[:window], values[-window:]
        start, end = float(np.median(first)), float(np.median(last))
        noise = float(np.hypot(median_error(first), median_error(last)))
        if start - end >= max(LOSS_MIN_DROP * start, LOSS_NOISE_SIGMAS * noise) or at_chance(ev, values)[0]:
            return None
        if start - end >= LOSS_MIN_DROP * start + LOSS_FLAT_SIGMAS * noise:  # a drop, if not a significant one
            return None
        level, _ = chance_level(ev, values)
        if level is not None and end < CONVERGED_FRACTION * level:
            return None
        return Finding(
            self.id,
            "warning",
            f"the loss {name!r} did not decrease: {fmt(start)} → {fmt(end)}",
            f"medians of the first/last {window} of {len(values)} finite records; {how}",
            f"final median not at least {LOSS_MIN_DROP:.0%} and {LOSS_NOISE_SIGMAS:g} standard errors below "
            f"the initial one (first/last {LOSS_WINDOW_FRACTION:.0%} of ≥ {LOSS_MIN_RECORDS} records)",
            step=int(steps[0]),
            fixes=(
                Fix("raise the learning rate 3–10× (check that optimizer.step() updates the model)",
                    f"the loss moved {100 * (start - end) / start:+.1f} % over {len(values)} records",
                    {"kind": "lr", "factor": 10.0}),
            ),
            values={"start": start, "end": end},
        )


class ChancePlateau(_LossTrend):
    id = "chance_plateau"
    reads = "the training loss scalars; the class count K (stated, meta, or the last layer's outputs)"
    severity = "severe: the run learns nothing"
    thresholds = {
        "CHANCE_MARGIN_FRACTION": "ln K nats name the class; a model that gained less than a tenth of them from "
        "its inputs has learned (almost) nothing: memorising shuffled labels gains about that much",
        "CHANCE_MARGIN_NATS": "a floor for few classes (K = 2: 0.069 nats)",
        "CHANCE_START_TOLERANCE": "K read from the last layer applies only to a loss that starts near ln K",
    }

    def judge(self, ev: Evidence, name: str, steps: np.ndarray, values: np.ndarray, how: str) -> Finding | None:
        stuck, level, source = at_chance(ev, values)
        if not stuck:
            return None
        margin = max(CHANCE_MARGIN_NATS, CHANCE_MARGIN_FRACTION * level)
        start = sustained_from(smoothed(values) >= level - margin)
        end = float(np.median(values[-_window(values):]))
        return Finding(
            self.id,
            "severe",
            f"no learning: the loss {name!r} stays at chance level ln K = {fmt(level)} (ends at {fmt(end)})",
            f"{fmt(float(values[0]))} at step {int(steps[0])} → median {fmt(end)} over the last "
            f"{_window(values)} of {len(values)} records; {source}; {how}",
            f"final median within max({CHANCE_MARGIN_NATS:g} nats, {CHANCE_MARGIN_FRACTION:.0%} of ln K) "
            "below ln K (and at most 1.5 ln K)",
            step=int(steps[start if start is not None else 0]),
            fixes=chance_fixes(ev, level),
            values={"chance": level, "end": end},
        )


def chance_fixes(ev: Evidence, level: float) -> tuple[Fix, ...]:
    """Labels first unless the gradients show why nothing learns (then that cause, then labels)."""
    labels = Fix(
        "check that the labels belong to the inputs (shuffled or misaligned labels, a wrong target column, a "
        "class mapping that changes between batches)",
        f"the loss stays at ln K = {fmt(level)}: the model predicts no better than the class prior",
        {"kind": "labels"},
    )
    lr = Fix("raise the learning rate 10×", "the updates may be too small to move the model",
             {"kind": "lr", "factor": 10.0})
    ratio = ev.ratios.get("ratio")
    if ratio is not None and len(ratio) and np.nanmedian(np.where(ratio.missing, np.nan, ratio.values)) < 1e-5:
        return lr, labels
    return labels, lr


class LossUnstable(_LossTrend):
    id = "loss_unstable"
    severity = "warning"
    thresholds = {
        "SMOOTH_RECORDS": "a trailing median over ≥ 5 records (a twentieth of the run) removes single bad batches",
        "SMOOTH_MAX_RECORDS": "fifty records suffice against noise and keep a long run's window short",
        "UNSTABLE_FACTOR": "a stable descent never doubles its smoothed loss; mini-batch noise is removed by "
        "the median",
        "UNSTABLE_BASELINE_WIDTHS": "the level risen from is the running minimum of a median over 3w records: a "
        "lucky run of low batches shorter than that does not set it",
        "UNSTABLE_MIN_RISE": "the rise must also be a quarter of the starting loss (or of ln K), so that a "
        "converged loss going from 0.01 to 0.03 is not called unstable",
        "LOSS_NOISE_SIGMAS": "and three standard errors of the smoothed median (where its minimum was taken, at "
        "least the typical one: small batches are noisy); the rise holds for the w records from there on (a lucky "
        "run of low batches is no trend)",
    }

    def judge(self, ev: Evidence, name: str, steps: np.ndarray, values: np.ndarray, how: str) -> Finding | None:
        width = smoothing_width(values)
        smooth = smoothed(values)
        # the level to rise from: the running minimum of a three times longer median (a lucky run of low batches,
        # shorter than that, does not set it)
        base = smoothed(values, UNSTABLE_BASELINE_WIDTHS * width)
        low = np.minimum.accumulate(base)
        level, _ = chance_level(ev, values)
        scale = max(abs(float(smooth[0])), level or 0.0)
        at_low = np.maximum.accumulate(np.where(base <= low, np.arange(len(base)), 0))
        # the noise of the smoothed loss where its minimum was taken, at least its typical noise over the records
        # (not the rise's own spread; a lucky run of low batches has less)
        error = smoothed_error(values)
        noise = np.maximum(error[at_low], float(np.median(error)))
        floor = np.maximum(UNSTABLE_MIN_RISE * scale, LOSS_NOISE_SIGMAS * noise)
        above = (smooth >= UNSTABLE_FACTOR * low) & (smooth - low >= floor)
        bad = np.zeros(len(above), bool)  # held for the w records from there on (a lucky low run is no trend)
        if len(above) >= width:
            bad[: len(above) - width + 1] = np.lib.stride_tricks.sliding_window_view(above, width).all(axis=1)
        if not bad.any():
            return None
        n = int(np.argmax(bad))
        m = int(at_low[n])
        return Finding(
            self.id,
            "warning",
            f"the loss {name!r} is unstable: its smoothed value rose {smooth[n] / low[n]:.1f}× above its "
            f"minimum",
            f"smoothed minimum {fmt(low[n])} at step {int(steps[m])} → {fmt(smooth[n])} at step {int(steps[n])} "
            f"(peak {fmt(float(smooth.max()))}); {how}",
            f"trailing median over min({SMOOTH_MAX_RECORDS}, max({SMOOTH_RECORDS}, N/20)) records ≥ "
            f"{UNSTABLE_FACTOR:g}× its running minimum and ≥ max({UNSTABLE_MIN_RISE:g}× max(starting loss, "
            f"ln K), {LOSS_NOISE_SIGMAS:g} standard errors) above it, for w records",
            step=int(steps[n]),
            fixes=(
                Fix("lower the learning rate 10×", "the loss climbs back up after it had gone down: steps "
                    "overshoot", {"kind": "lr", "factor": 0.1}),
                Fix("add a learning-rate warm-up or gradient clipping at the typical gradient norm",
                    "a few large steps can throw the model out of its basin", {"kind": "clip"}),
            ),
            values={"minimum": float(low[n]), "risen_to": float(smooth[n])},
        )


class Overfitting(Rule):
    id = "overfitting"
    reads = "validation loss scalars (val_loss, eval/loss, ...) beside the training loss"
    severity = "warning"
    thresholds = {
        "OVERFIT_RISE": "a held-out loss 10 % above its minimum is beyond the sampling noise of a validation "
        "set of a few hundred samples",
        "OVERFIT_MIN_RECORDS": "a minimum and a rise need at least four validation records",
        "OVERFIT_PERSIST": "one noisy evaluation is not a trend: the last three records all stay above",
    }

    def check(self, ev: Evidence) -> list[Finding] | Unchecked:
        validations = validation_losses(ev)
        if not validations:
            return Unchecked("overfitting", "no validation loss was logged (a name like val_loss or eval/loss)")
        losses, _ = training_losses(ev)
        out = []
        for name, scalar in validations:
            steps, values = finite(scalar)
            if len(values) < OVERFIT_MIN_RECORDS:
                continue
            best = int(np.argmin(values))
            lowest, tail = float(values[best]), values[-OVERFIT_PERSIST:]
            if best >= len(values) - OVERFIT_PERSIST or (tail < (1 + OVERFIT_RISE) * lowest).any():
                continue
            end = float(np.median(tail))
            still = self._training_falls(losses, int(steps[best]))
            if still is False:
                continue
            out.append(
                Finding(
                    self.id,
                    "warning",
                    f"overfitting: {name!r} rose {100 * (end / lowest - 1):.0f} % above its minimum while the "
                    "training loss kept falling",
                    f"{name} {fmt(lowest)} at step {int(steps[best])} → {fmt(end)} (median of the last "
                    f"{OVERFIT_PERSIST} records, to step {int(steps[-1])})"
                    + ("" if still is None else "; the training loss fell over the same steps"),
                    f"the last {OVERFIT_PERSIST} validation records ≥ {1 + OVERFIT_RISE:g}× its minimum, training loss "
                    "lower at the end than at that minimum",
                    step=int(steps[best]),
                    fixes=(
                        Fix(f"stop at step {int(steps[best])} (early stopping on {name})",
                            "the held-out loss was lowest there", {"kind": "early_stop", "step": int(steps[best])}),
                        Fix("regularise: weight decay, dropout or data augmentation; or more training data",
                            "the model fits what the held-out data does not share", {"kind": "weight_decay"}),
                    ),
                    values={"best": lowest, "end": end},
                )
            )
        return out

    @staticmethod
    def _training_falls(losses: list[tuple[str, Scalar]], since: int) -> bool | None:
        for _, scalar in losses:
            steps, values = finite(scalar)
            before, after = values[steps <= since], values[steps > since]
            if len(before) and len(after) >= 2:
                tail = max(1, len(after) // 5)
                return float(np.median(after[-tail:])) < float(np.median(before[-tail:]))
        return None


RULES = (ChancePlateau(), LossNotDecreasing(), LossUnstable(), Overfitting())
