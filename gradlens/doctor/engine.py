"""Apply every rule to one run: the rules in order, what could not be checked gathered into info findings, and
the findings the live engine wrote into the file added back when the records no longer show them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from gradlens.doctor import (
    activations,
    clipping,
    events,
    gradients,
    learning_rate,
    loss,
    nonfinite,
    norms,
    parameters,
    science,
    status,
)
from gradlens.doctor.evidence import Evidence, from_run
from gradlens.doctor.finding import EVENT_KIND, Finding, Fix, by_severity, finding_from_event
from gradlens.doctor.rule import Rule, Unchecked

RULES: tuple[Rule, ...] = (  # causes before the loss symptoms they explain (ties in the verdict go to the first)
    *status.RULES,
    *nonfinite.RULES,
    *gradients.RULES,
    *norms.RULES,
    *activations.RULES,
    *parameters.RULES,
    *clipping.RULES,
    *learning_rate.RULES,
    *loss.RULES,
    *events.RULES,
    *science.RULES,
)
# Findings that explain a loss that does not learn, most telling first, and the loss symptoms they explain.
CAUSES = ("nonfinite", "clipping_dominates", "dead_layer", "dead_units", "saturated_units", "vanishing", "exploding",
          "exploding_size", "not_in_optimizer", "unchanged_weights", "frozen_by_mistake", "lr_too_high", "lr_too_low")
LOSS_SYMPTOMS = ("chance_plateau", "loss_not_decreasing", "loss_unstable")


def apply(
    ev: Evidence, rules: Sequence[Rule], guard: bool = False
) -> tuple[list[Finding], dict[tuple[str, str], list[str]]]:
    """The findings of ``rules`` on ``ev``, and what could not be checked: (what, how) -> rule ids.

    ``guard`` (the live engine, inside a training loop): a rule that raises becomes a ``doctor_error`` warning
    naming the rule and the error, instead of an exception in the user's loop.
    """
    findings: list[Finding] = []
    unchecked: dict[tuple[str, str], list[str]] = {}
    for rule in rules:
        try:
            result = rule.check(ev)
        except Exception as error:
            if not guard:
                raise
            message = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
            findings.append(Finding("doctor_error", "warning", f"the doctor's rule {rule.id!r} failed ({message})",
                                    "the rule was skipped; the other rules ran", "a rule that raises is skipped "
                                    "while training and said once", layers=(rule.id,)))
            continue
        if isinstance(result, Unchecked):
            unchecked.setdefault((result.what, result.how), []).append(rule.id)
        else:
            findings += result
    return findings, unchecked


def explain(findings: Sequence[Finding]) -> list[Finding]:
    """Loss symptoms whose cause another finding shows get that finding's first fix first (the loss rules alone
    would rank "check the labels" first for a run whose gradients are clipped to nothing)."""
    causes = sorted((f for f in findings if f.rule in CAUSES and f.severity != "info" and f.fixes),
                    key=lambda f: CAUSES.index(f.rule))
    if not causes:
        return list(findings)
    cause = causes[0]
    first = Fix(cause.fixes[0].action, f"the loss is explained by another finding: {cause.title}",
                cause.fixes[0].change)
    return [replace(f, fixes=(first, *f.fixes)) if f.rule in LOSS_SYMPTOMS and f.severity != "info" else f
            for f in findings]


def not_checked(unchecked: dict[tuple[str, str], list[str]]) -> list[Finding]:
    """One info finding per missing kind of data: what was not checked, why, and how to record it."""
    return [
        Finding("not_checked", "info", what, f"{how} (rules: {', '.join(dict.fromkeys(ids))})",
                "a rule that cannot be checked is said, never passed in silence")
        for (what, how), ids in unchecked.items()
    ]


def recorded(ev: Evidence, findings: Sequence[Finding]) -> list[Finding]:
    """Findings written into the file while training (events of kind ``finding``) whose rule found nothing now."""
    seen = {f.rule for f in findings}
    out = []
    for event in ev.events or ():
        if event.kind != EVENT_KIND or event.source in seen:
            continue
        finding = finding_from_event(event.source, event.message, event.step)
        if finding is not None:
            out.append(finding)
            seen.add(finding.rule)
    return out


def diagnose_evidence(ev: Evidence) -> list[Finding]:
    """Every finding on ``ev``, most severe first."""
    findings, unchecked = apply(ev, RULES)
    return by_severity(explain(findings) + recorded(ev, findings) + not_checked(unchecked))


def diagnose(
    run, *, loss: str | None = None, num_classes: int | None = None, now: float | None = None
) -> list[Finding]:
    """Every finding for a recorded run (:class:`gradlens.loader.Run`), most severe first, then by first step.

    Args:
        run: the run.
        loss: the scalar to take as the training loss (default: every scalar named like a loss).
        num_classes: K of a classifier, for the chance level ln K (default: ``meta["num_classes"]`` or the last
            layer's output size when the first loss fits it).
        now: unix time the staleness of a running file is judged at (default: now).

    Raises:
        ValueError: ``loss`` names a scalar that was not logged, or ``num_classes`` < 2.
    """
    if num_classes is not None and int(num_classes) < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes!r}")
    return diagnose_evidence(from_run(run, loss=loss, num_classes=num_classes, now=now))


def healthy(findings: Sequence[Finding]) -> bool:
    """True when no finding is severe or a warning."""
    return all(f.severity == "info" for f in findings)
