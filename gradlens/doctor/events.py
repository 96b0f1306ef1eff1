"""Rules on run events: optimizer steps the AMP gradient scaler skipped, probe errors and switched-off probes,
recorded warnings.

AMP skips: ``GradScaler`` skips a step whose scaled gradients overflowed and halves its scale; it doubles the
scale after 2000 clean steps (its defaults). From its initial scale 2¹⁶ it needs at most ~16 halvings to
reach a scale that fits, so skips in the first ``AMP_CALIBRATION_STEPS`` steps are calibration; after that a
healthy run skips about one step in 2000. More than ``AMP_WARN_SHARE`` of the later steps is an overflow that
keeps coming back; nearly all of them (``AMP_SEVERE_SHARE``) means the optimizer never steps.
"""

from __future__ import annotations

from gradlens.doctor.evidence import Evidence
from gradlens.doctor.finding import Finding, Fix
from gradlens.doctor.rule import Rule, Unchecked

AMP_CALIBRATION_STEPS = 20  # skips before this step are the scaler finding its scale
AMP_WARN_SHARE = 0.05  # skipped share of the later steps above: warning
AMP_SEVERE_SHARE = 0.9  # ... at or above: severe (the optimizer does not step)

NO_EVENTS = Unchecked("probe errors and skipped steps", "this gradlens cannot read run events")


class SkippedSteps(Rule):
    id = "amp_skipped_steps"
    reads = "events of kind step_skipped (source GradScaler)"
    severity = "warning; severe when ≥ 90 % of the steps after calibration are skipped"
    thresholds = {
        "AMP_CALIBRATION_STEPS": "≤ 16 halvings from the default scale 2¹⁶, with margin",
        "AMP_WARN_SHARE": "a healthy scaler skips ~1 step in 2000 after calibration",
        "AMP_SEVERE_SHARE": "the optimizer then almost never steps",
    }

    def check(self, ev: Evidence) -> list[Finding] | Unchecked:
        if ev.events is None:
            return NO_EVENTS
        skipped = sorted(e.step for e in ev.events if e.kind == "step_skipped")
        if not skipped:
            return []
        last = ev.last_step()
        later = [s for s in skipped if s >= AMP_CALIBRATION_STEPS]
        span = (last + 1 - AMP_CALIBRATION_STEPS) if last is not None else 0
        share = len(later) / span if span > 0 else 0.0
        shown = ", ".join(str(s) for s in skipped[:10]) + (" ..." if len(skipped) > 10 else "")
        if share <= AMP_WARN_SHARE:
            return [Finding(self.id, "info", f"{len(skipped)} optimizer step(s) skipped by the AMP gradient scaler "
                            f"({len(later)} after step {AMP_CALIBRATION_STEPS})", f"steps {shown}",
                            f"step_skipped events; warning above {AMP_WARN_SHARE:.0%} of the steps after "
                            f"{AMP_CALIBRATION_STEPS}")]
        return [Finding(
            self.id, "severe" if share >= AMP_SEVERE_SHARE else "warning",
            f"the AMP gradient scaler skipped {share:.1%} of the optimizer steps after step {AMP_CALIBRATION_STEPS}",
            f"{len(skipped)} skipped steps: {shown}",
            f"step_skipped events after step {AMP_CALIBRATION_STEPS} > {AMP_WARN_SHARE:.0%} of the steps (severe ≥ "
            f"{AMP_SEVERE_SHARE:.0%})",
            step=later[0],
            fixes=(Fix("find what overflows in float16 (values above 65504: large activations, an unnormalised loss);"
                       " keep the loss and softmax in float32, or train in bfloat16",
                       "the scaler keeps overflowing after its calibration", {"kind": "scaler"}),),
            values={"share": share},
        )]


class ProbeEvents(Rule):
    id = "probe_error"  # and "probe_disabled"; recorded warnings are info "warning_event"
    reads = "events of kinds probe_error, probe_disabled, warning"
    severity = "warning (records are missing); info for recorded warnings"
    thresholds = {}

    def check(self, ev: Evidence) -> list[Finding] | Unchecked:
        if ev.events is None:
            return NO_EVENTS
        out = []
        for kind, word in (("probe_error", "probe errors"), ("probe_disabled", "probes switched off")):
            rows = [e for e in ev.events if e.kind == kind]
            if not rows:
                continue
            sources = list(dict.fromkeys(e.source for e in rows))
            evidence = "; ".join(
                f"{source}: {len(group)} at steps {', '.join(str(e.step) for e in group[:5])}"
                f"{' ...' if len(group) > 5 else ''} — {group[0].message}"
                for source in sources for group in [[e for e in rows if e.source == source]]
            )
            out.append(Finding(
                kind, "warning", f"{len(rows)} {word}", evidence, f"events of kind {kind!r}",
                step=rows[0].step, layers=tuple(sources),
                fixes=(Fix("read the message: a probe that cannot handle this model is switched off and records "
                           "nothing more; report it if it is gradlens's fault", "records of that probe are missing",
                           {"kind": "probe", "probes": sources}),),
            ))
        warnings = [e for e in ev.events if e.kind == "warning"]
        if warnings:
            out.append(Finding(
                "warning_event", "info", f"{len(warnings)} warning(s) recorded during the run",
                "; ".join(f"step {e.step} {e.source}: {e.message}" for e in warnings[:5]), "events of kind 'warning'",
                step=warnings[0].step,
            ))
        return out


RULES = (SkippedSteps(), ProbeEvents())
