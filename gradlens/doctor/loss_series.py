"""The loss as the rules see it: which logged scalars are losses, the chance level ln K of a classifier, and
robust statistics of a noisy loss series (trailing medians and their standard errors).

Which scalars are losses: the one the user names (``diagnose(run, loss="nll")``, ``gradlens doctor --loss``),
else every scalar whose name has a loss word (``loss``, ``nll``, ``xent``, ``ce``, ``cross_entropy``,
``objective``); those with a validation word (``val``, ``valid``, ``eval``, ``test``, ``dev``) are validation
losses. Losses of a two-player game (a name word ``d``/``g``/``disc``/``gen``/``adv``/``critic``) are not
expected to decrease.

Chance level: a K-class classifier that has learned nothing predicts the class prior, at best uniform:
cross-entropy ln K. K is the user's (``num_classes=``), ``meta["num_classes"]`` (or in ``config``), or the output
size of the last layer in the layer table, trusted only when the first recorded loss lies within
``CHANCE_START_TOLERANCE`` of ln K (the loss looks like a cross-entropy over K classes at initialisation).

Noise: σ of a window from the median absolute deviation of its successive differences (a trend inside the
window is not noise), 1.4826 · MAD(Δ) / √2; the standard error of a median of n values 1.25 σ / √n.
"""

from __future__ import annotations

import math
import re

import numpy as np

from gradlens.doctor.evidence import Evidence, Scalar
from gradlens.doctor.finding import fmt
from gradlens.doctor.rule import Unchecked

LOSS_WORDS = {"loss", "nll", "xent", "ce", "crossentropy", "cross_entropy", "objective", "bce", "mse"}
VALIDATION_WORDS = {"val", "valid", "validation", "eval", "test", "dev", "holdout"}
GAME_WORDS = {"d", "g", "disc", "gen", "discriminator", "generator", "adv", "adversarial", "critic"}
CHANCE_START_TOLERANCE = 0.5  # K from the last layer is used when the first loss is within ±50 % of ln K
SMOOTH_RECORDS = 5  # trailing median over max(5, N/20) records removes mini-batch noise ...
SMOOTH_MAX_RECORDS = 50  # ... at most 50 (a long run's window stays short enough to see an instability)


def words(name: str) -> set[str]:
    """Lower-cased words of a scalar name (split at ``/ _ . -`` and spaces)."""
    return {w for w in re.split(r"[/_.\-\s]+", name.lower()) if w}


def is_loss(name: str) -> bool:
    """Whether a name reads as a loss (a loss word, or ``loss`` inside a word: ``trainloss``)."""
    return bool(words(name) & LOSS_WORDS) or "loss" in name.lower()


def is_validation(name: str) -> bool:
    """Whether a name reads as a held-out measurement (``val_loss``, ``eval/loss``, ``test_nll``)."""
    return bool(words(name) & VALIDATION_WORDS) or name.lower().startswith(("val", "valid", "eval", "test"))


def is_game(name: str) -> bool:
    """Whether a loss belongs to a two-player game (``loss_d``, ``g_loss``, ``disc/loss``)."""
    return bool(words(name) & GAME_WORDS)


def training_losses(ev: Evidence) -> tuple[list[tuple[str, Scalar]], str]:
    """The training losses and how they were chosen (a phrase for the evidence).

    Raises:
        ValueError: the user named a loss that was not logged.
    """
    if ev.loss is not None:
        if ev.loss not in ev.scalars:
            raise ValueError(
                f"no scalar named {ev.loss!r} was logged; logged scalars: {sorted(ev.scalars) or 'none'}"
            )
        return [(ev.loss, ev.scalars[ev.loss])], f"{ev.loss!r} named as the loss"
    chosen = [(n, s) for n, s in ev.scalars.items() if is_loss(n) and not is_validation(n)]
    names = ", ".join(repr(n) for n, _ in chosen)
    return chosen, f"{names} taken as the loss by name (name another with --loss)"


def validation_losses(ev: Evidence) -> list[tuple[str, Scalar]]:
    """Validation losses by name."""
    return [(n, s) for n, s in ev.scalars.items() if is_loss(n) and is_validation(n)]


def no_loss(ev: Evidence) -> Unchecked:
    logged = ", ".join(sorted(ev.scalars)) or "none"
    return Unchecked(
        "loss rules (not decreasing, unstable, chance level)",
        f"no scalar named like a loss was logged (scalars: {logged}); log it with session.log(loss=...) or name "
        "it: gradlens doctor --loss NAME",
    )


def finite(scalar: Scalar) -> tuple[np.ndarray, np.ndarray]:
    keep = np.isfinite(scalar.values)
    return scalar.steps[keep], scalar.values[keep]


def smoothing_width(values: np.ndarray) -> int:
    """w = min(50, max(5, N/20)) records."""
    return min(SMOOTH_MAX_RECORDS, max(SMOOTH_RECORDS, len(values) // 20))


def trailing_windows(values: np.ndarray, width: int | None = None) -> np.ndarray:
    """``[N, width]`` (default :func:`smoothing_width`): for each record the records ending there (the first value
    repeated before the start)."""
    width = width or smoothing_width(values)
    padded = np.concatenate([np.full(width - 1, values[0]), values])
    return np.lib.stride_tricks.sliding_window_view(padded, width)


def smoothed(values: np.ndarray, width: int | None = None) -> np.ndarray:
    """Trailing median of each record's window (:func:`trailing_windows`)."""
    return np.median(trailing_windows(values, width), axis=1)


def smoothed_error(values: np.ndarray) -> np.ndarray:
    """Standard error of each trailing median: 1.25 σ/√w, σ from :func:`noise_sigma` of its window."""
    windows = trailing_windows(values)
    return 1.25 * noise_sigma(windows) / np.sqrt(windows.shape[1])


def classes(ev: Evidence) -> tuple[int | None, str]:
    """The class count K and where it comes from (``stated``, ``meta``, ``last layer``), or (None, reason)."""
    if ev.num_classes is not None:
        return int(ev.num_classes), "stated"
    value = ev.setting("num_classes")
    if isinstance(value, int) and value >= 2:
        return value, 'meta["num_classes"]'
    if ev.layers:
        last = ev.layers[-1]
        shape = list(last.get("shape") or [])
        if str(last.get("kind")) == "linear" and shape and int(shape[0]) >= 2:
            return int(shape[0]), f"the output size of the last layer {last.get('name')}"
    return None, "unknown (state it with --classes K)"


def chance_level(ev: Evidence, values: np.ndarray) -> tuple[float | None, str]:
    """ln K for a loss whose first values are ``values`` (None when K is unknown or does not fit the loss)."""
    k, source = classes(ev)
    if k is None or not len(values):
        return None, source
    level = math.log(k)
    start = float(np.median(values[:3]))
    if source.startswith("the output size") and abs(start - level) > CHANCE_START_TOLERANCE * level:
        return None, f"{source} (K = {k}) does not fit a first loss of {fmt(float(values[0]))}"
    return level, f"K = {k} from {source}"


def noise_sigma(windows: np.ndarray) -> np.ndarray:
    """Robust noise σ of each row of ``windows`` ``[R, w]`` from successive differences (a trend inside the window
    does not count as noise): 1.4826 · MAD(Δ) / √2."""
    steps = np.diff(windows, axis=-1)
    if steps.shape[-1] == 0:
        return np.zeros(windows.shape[:-1])
    spread = np.median(np.abs(steps - np.median(steps, axis=-1, keepdims=True)), axis=-1)
    return 1.4826 * spread / np.sqrt(2)


def median_error(values: np.ndarray) -> float:
    """Standard error of the median of ``values``: 1.25 σ/√n, σ from :func:`noise_sigma`."""
    return float(1.25 * noise_sigma(np.asarray(values)[None, :])[0] / np.sqrt(len(values)))
