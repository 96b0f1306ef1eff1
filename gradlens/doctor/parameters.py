"""Rules on parameters: never given a gradient, frozen (on purpose or by mistake), in no optimizer param group,
or never changed by the optimizer.

Frozen by mistake: fine-tuning freezes a *prefix* of the model (embeddings, a backbone) or every module of one
kind (all norms), or most of the model (adapters, LoRA). A frozen module with trainable modules before and
after it, while other modules of its kind train and less than half of the values are frozen, matches none of
these recipes: it looks like a ``requires_grad = False`` left on the wrong layer.
"""

from __future__ import annotations

import numpy as np

from gradlens.doctor.evidence import Evidence
from gradlens.doctor.finding import Finding, Fix
from gradlens.doctor.rule import Rule, Unchecked, listed, span, sustained_columns

FROZEN_MISTAKE_MAX_SHARE = 0.5  # frozen modules in the middle look unintended only when < 50 % of values are frozen
UNCHANGED_MIN_RECORDS = 3  # update norm exactly zero at three records (90 % of those since, the last included)
NO_RATIOS = Unchecked("unchanged weights and update-to-weight ratios", "no UpdateRatio probe was recorded")


def _modules(parameters: list[dict]) -> list[tuple[str, str, list[dict]]]:
    """(module, kind, its parameters) in registration order."""
    out: dict[str, tuple[str, list[dict]]] = {}
    for p in parameters:
        module = str(p.get("module", str(p.get("name", "")).rsplit(".", 1)[0]))
        out.setdefault(module, (str(p.get("kind", "?")), []))[1].append(p)
    return [(module, kind, params) for module, (kind, params) in out.items()]


def _trainable(params: list[dict]) -> bool:
    return any(p.get("trainable") is not False for p in params)


class NoGradient(Rule):
    id = "no_gradient"
    reads = "GradStats nonfinite = -1 (the parameter's .grad was None)"
    severity = "warning when at every record; info when at some"
    thresholds = {}

    def check(self, ev: Evidence) -> list[Finding] | Unchecked:
        flags = ev.grads.get("nonfinite")
        if flags is None or not len(flags):
            return []
        every, some = flags.missing.all(axis=0), flags.missing.any(axis=0)
        never = np.flatnonzero(every).tolist()
        sometimes = np.flatnonzero(some & ~every).tolist()
        out = []
        if never:
            names = [flags.layers[i] for i in never]
            out.append(Finding(
                self.id, "warning",
                f"{len(names)} parameter(s) never received a gradient (unused in the forward, detached, or outside "
                "the loss)",
                f"{listed(names, 10)}: .grad was None at all {len(flags)} records",
                f"{ev.grad_probe}/nonfinite = -1 (no .grad) at every record",
                step=int(flags.steps[0]), layers=tuple(names),
                fixes=(Fix("use the parameter in the forward pass, or remove it (or set requires_grad=False)",
                           "it is trainable but no loss depends on it", {"kind": "unused", "parameters": names}),),
            ))
        if sometimes:
            out.append(Finding(
                self.id, "info", f"{len(sometimes)} parameter(s) had no gradient at some records",
                ", ".join(f"{flags.layers[i]} ({int(flags.missing[:, i].sum())} of {len(flags)})"
                          for i in sometimes[:10]),
                f"{ev.grad_probe}/nonfinite = -1 (no .grad) at some records",
                layers=tuple(flags.layers[i] for i in sometimes),
            ))
        return out


class Frozen(Rule):
    id = "frozen_by_mistake"  # intended freezing is an info finding "frozen"
    reads = "meta['parameters']: trainable (requires_grad at attach), module, kind, numel"
    severity = "warning for a module that looks frozen by mistake; info for a fine-tuning recipe"
    thresholds = {
        "FROZEN_MISTAKE_MAX_SHARE": "adapter and LoRA recipes freeze most of the model on purpose; a mistake "
        "freezes a small part",
    }

    def check(self, ev: Evidence) -> list[Finding] | Unchecked:
        parameters = ev.parameters
        if parameters is None:
            return Unchecked("frozen parameters", "meta['parameters'] is not stored (runs written by gradlens.attach "
                             "have it)")
        frozen = [p for p in parameters if p.get("trainable") is False]
        if not frozen:
            return []
        modules = _modules(parameters)
        total = sum(int(p.get("numel", 0) or 0) for p in parameters) or 1
        share = sum(int(p.get("numel", 0) or 0) for p in frozen) / total
        trains = [_trainable(params) for _, _, params in modules]
        kinds_training = {kind for (_, kind, _), t in zip(modules, trains, strict=True) if t}
        suspects = []
        for k, (module, kind, params) in enumerate(modules):
            if trains[k] or not any(trains[:k]) or not any(trains[k + 1:]):
                continue
            if kind in kinds_training and share < FROZEN_MISTAKE_MAX_SHARE:
                before = next(m for m, _, ps in reversed(modules[:k]) if _trainable(ps))
                after = next(m for m, _, ps in modules[k + 1:] if _trainable(ps))
                suspects.append((module, kind, params, before, after))
        out = []
        if suspects:
            names = [str(p.get("name")) for *_, params, _, _ in suspects for p in params]
            why = "; ".join(f"{module} ({kind}) is frozen while {before} before it and {after} after it train"
                            for module, kind, _, before, after in suspects[:4])
            out.append(Finding(
                self.id, "warning",
                f"{span([m for m, *_ in suspects])} look{'s' if len(suspects) == 1 else ''} frozen by mistake",
                f"{why}; other {'/'.join(sorted({k for _, k, *_ in suspects}))} modules train; {share:.0%} of the "
                "values are frozen (a fine-tuning recipe freezes a prefix, every module of a kind, or most values)",
                "a frozen module between trainable ones, of a kind that trains elsewhere, with < "
                f"{FROZEN_MISTAKE_MAX_SHARE:.0%} of the values frozen",
                step=ev.first_step(), layers=tuple(names),
                fixes=(Fix(f"set requires_grad=True on {listed(names, 4)} (remove the line that froze it)",
                           "it sits between layers that train, unlike any fine-tuning recipe",
                           {"kind": "unfreeze", "parameters": names}),),
                values={"frozen_share": share},
            ))
        intended = [p for p in frozen if str(p.get("name")) not in {n for f in out for n in f.layers}]
        if intended:
            count = sum(int(p.get("numel", 0) or 0) for p in intended)
            out.append(Finding(
                "frozen", "info",
                f"{len(intended)} frozen parameter(s) ({count} values) are not trained and not measured",
                listed([str(p.get("name")) for p in intended], 10),
                'meta["parameters"] lists them with trainable = False (requires_grad was False)',
                layers=tuple(str(p.get("name")) for p in intended),
            ))
        return out


class NotInOptimizer(Rule):
    id = "not_in_optimizer"
    reads = "meta['parameters'] in_optimizer (False: requires_grad but in no param group)"
    severity = "warning; severe when no trainable parameter is in the optimizer"
    thresholds = {}

    def check(self, ev: Evidence) -> list[Finding] | Unchecked:
        parameters = ev.parameters or []
        known = [p for p in parameters if "in_optimizer" in p and p.get("trainable") is not False]
        if not known:
            return Unchecked("parameters outside the optimizer", "which parameters the optimizer holds was not "
                             "recorded (meta['parameters'][i]['in_optimizer'])")
        missing = [str(p.get("name")) for p in known
                   if p.get("in_optimizer") is False and not p.get("updated_elsewhere")]
        if not missing:
            return []
        return [Finding(
            self.id, "severe" if len(missing) == len(known) else "warning",
            f"{len(missing)} trainable parameter(s) are in no optimizer param group: they get gradients but are never "
            "updated",
            f"{listed(missing, 10)} (requires_grad True, in none of the optimizer's param groups)",
            "meta['parameters'] in_optimizer = False for a trainable parameter",
            step=ev.first_step(), layers=tuple(missing),
            fixes=(Fix("pass them to the optimizer (torch.optim.X(model.parameters(), ...) or add a param group)",
                       "the optimizer was built from a subset of the parameters",
                       {"kind": "optimizer_params", "parameters": missing}),),
        )]


class Unchanged(Rule):
    id = "unchanged_weights"
    reads = "UpdateRatio update_norm (‖Δw‖ of each optimizer step)"
    severity = "warning; severe when no recorded parameter changes"
    thresholds = {"UNCHANGED_MIN_RECORDS": "exactly zero updates at three records in a row is no skipped step"}

    def check(self, ev: Evidence) -> list[Finding] | Unchecked:
        update = ev.ratios.get("update_norm")
        if update is None:
            return NO_RATIOS
        if not len(update):
            return []
        onsets = sustained_columns(update.values == 0)
        found = [(int(i), int(onsets[i])) for i in np.flatnonzero(onsets >= 0)
                 if len(update) - onsets[i] >= UNCHANGED_MIN_RECORDS]
        grads = ev.grads.get("max_abs", ev.grads.get("norm"))
        listed_elsewhere = {str(p.get("name")) for p in ev.parameters or [] if p.get("in_optimizer") is False}
        flags = ev.grads.get("nonfinite")
        if flags is not None and len(flags):  # never a gradient: said by no_gradient
            listed_elsewhere |= {flags.layers[i] for i in np.flatnonzero(flags.missing.all(axis=0))}
        sizes = ev.grads.get("max_abs", ev.grads.get("norm"))
        if sizes is not None and len(sizes):  # a gradient exactly zero since: said by dead_layer
            listed_elsewhere |= {sizes.layers[i] for i in np.flatnonzero(sustained_columns(sizes.values == 0) >= 0)}
        found = [(i, s) for i, s in found if update.layers[i] not in listed_elsewhere]
        if not found:
            return []
        names = [update.layers[i] for i, _ in found]
        with_grad = []
        if grads is not None:
            position = {name: j for j, name in enumerate(grads.layers)}
            with_grad = [n for n in names if n in position and np.nanmax(np.where(
                grads.missing[:, position[n]], 0, grads.values[:, position[n]])) > 0]
        first = min(s for _, s in found)
        return [Finding(
            self.id, "severe" if len(found) == len(update.layers) else "warning",
            f"{len(found)} parameter(s) never change: the optimizer's update is exactly zero",
            f"{listed(names, 8)}: ‖Δw‖ = 0 from step {int(update.steps[first])}"
            + (f"; {len(with_grad)} of them have non-zero gradients (a zero learning rate, or a param group that "
               "is not stepped?)" if with_grad else ""),
            f"{ev.ratio_probe}/update_norm == 0 at ≥ 90 % of the records since a record, the last included, "
            f"≥ {UNCHANGED_MIN_RECORDS} records",
            step=int(update.steps[first]), layers=tuple(names),
            fixes=(Fix("check the learning rate of their param group (> 0) and that optimizer.step() runs",
                       "their gradients are non-zero" if with_grad else "their weights do not move",
                       {"kind": "optimizer_params", "parameters": names}),),
        )]


RULES = (NoGradient(), Frozen(), NotInOptimizer(), Unchanged())
