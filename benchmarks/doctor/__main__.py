"""``python -m benchmarks.doctor`` (``make doctor-bench``): train every labelled scenario with the live doctor on
(``attach(live=5)``), diagnose its file after the fact, then print per-symptom precision and recall, the live
detection delay (onset measured in the scenario → the step the live doctor wrote its finding), the live
doctor's CPU cost per training step, and the time to load and diagnose a run of 10⁴ steps × 150 parameters
and of one live check at 150 parameters.

Exit status 0 when the targets are met (recall ≥ 95 % with the right layer and onset, no false alarm on a
healthy run, load + diagnose ≤ 1 s at 10⁴ × 150), 1 otherwise.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import tempfile
import warnings

import numpy as np

from benchmarks.doctor.harness import LIVE_EVERY
from benchmarks.doctor.scenarios import SCENARIOS, SYMPTOMS, Scenario, measured_extras
from benchmarks.doctor.score import RunScore, recorded, score
from benchmarks.doctor.timing import diagnose_seconds, live_check_microseconds, write_long_run

RECALL_TARGET = 0.95
DIAGNOSE_TARGET_SECONDS = 1.0


def run_scenario(scenario: Scenario, folder: str) -> RunScore:
    """Record, diagnose and score one scenario."""
    return _scored(scenario, recorded(scenario.name, folder))


def _scored(scenario: Scenario, recorded: tuple) -> RunScore:
    outcome, findings, detections, seconds = recorded
    result = score(scenario, outcome, findings, detections)
    result.seconds_diagnose = seconds
    return result


def _line(result: RunScore) -> str:
    loud = sorted({f.rule for f in result.findings if f.severity != "info"})
    missed = [t.truth.symptom for t in result.truths if t.found is None]
    flags = []
    if missed:
        flags.append(f"MISSED {missed}")
    if result.false_alarms:
        flags.append(f"FALSE {[f.rule for f in result.false_alarms]}")
    if result.live_false_alarms:
        flags.append(f"LIVE-FALSE {sorted({f.rule for f in result.live_false_alarms})}")
    extras = measured_extras(result.outcome) if result.scenario.healthy else set()
    if extras:
        flags.append(f"MISLABELLED healthy run measures {sorted(extras)}")
    label = "healthy" if result.scenario.healthy else ",".join(t.truth.symptom for t in result.truths) or "-"
    live = result.outcome.live_cpu / max(1, result.outcome.live_steps) * 1e3
    return (f"  {result.scenario.name:<26} {label:<34} {result.outcome.seconds:5.1f}s {live:5.2f} ms/step  "
            f"{', '.join(loud) or 'no warning'}{'  <- ' + '; '.join(flags) if flags else ''}")


def report(results: list[RunScore]) -> tuple[str, bool]:
    """The per-symptom table and the targets' verdict."""
    rows, ok = [], True
    rows.append(f"  {'symptom':<20} {'faults':>6} {'found':>5} {'recall':>7} {'runs flagged':>12} {'precision':>9} "
                f"{'live':>5} {'delay median/max (steps)':>25}")
    total_faults = total_found = 0
    for symptom in SYMPTOMS:
        truths = [t for r in results for t in r.truths if t.truth.symptom == symptom]
        found = [t for t in truths if t.found is not None]
        flagged = [r for r in results if any(f.severity != "info" and f.rule in SYMPTOMS[symptom] for f in r.findings)]
        wrong = [r for r in flagged if any(f.rule in SYMPTOMS[symptom] for f in r.false_alarms)]
        live = [t for t in truths if t.delay is not None]
        delays = [t.delay for t in live]
        total_faults += len(truths)
        total_found += len(found)
        recall = f"{len(found) / len(truths):.0%}" if truths else "-"
        precision = f"{1 - len(wrong) / len(flagged):.0%}" if flagged else "-"
        delay = f"{np.median(delays):.0f} / {max(delays)}" if delays else "-"
        rows.append(f"  {symptom:<20} {len(truths):>6} {len(found):>5} {recall:>7} {len(flagged):>12} "
                    f"{precision:>9} {len(live):>5} {delay:>25}")
    healthy = [r for r in results if r.scenario.healthy]
    alarms = [r for r in healthy if r.false_alarms]
    live_alarms = [r for r in healthy if r.live_false_alarms]
    others = [r for r in results if not r.scenario.healthy and r.false_alarms]
    recall = total_found / total_faults if total_faults else 1.0
    rows.append(f"  all: {total_found}/{total_faults} faults found with the right layer and onset (recall "
                f"{recall:.1%}, target ≥ {RECALL_TARGET:.0%}); false alarms on healthy runs: {len(alarms)} of "
                f"{len(healthy)} after the fact, {len(live_alarms)} live; faulty runs with an unexplained finding: "
                f"{len(others)}")
    ok = recall >= RECALL_TARGET and not alarms
    return "\n".join(rows), ok


def delays(results: list[RunScore]) -> str:
    """Per fault: the onset measured in the scenario → the step the live doctor wrote its first matching finding;
    and the live doctor's CPU cost per training step."""
    rows = [f"  {'scenario':<26} {'symptom':<20} {'onset':>6} {'live':>6} {'delay':>6}"]
    for r in results:
        for t in r.truths:
            live = "-" if t.live_step is None else str(t.live_step)
            delay = "-" if t.delay is None else str(t.delay)
            rows.append(f"  {r.scenario.name:<26} {t.truth.symptom:<20} {t.truth.onset:>6} {live:>6} {delay:>6}")
    trained = [r.outcome for r in results if r.outcome.live_steps and r.scenario.kind == "train"]
    cost = [o.live_cpu / o.live_steps * 1e3 for o in trained]
    share = [o.live_cpu / o.cpu for o in trained if o.cpu > 0]
    if cost:
        rows.append(f"  live doctor CPU per training step (feeding + a check every {LIVE_EVERY} steps): median "
                    f"{np.median(cost):.2f} ms, max {max(cost):.2f} ms over {len(cost)} runs; its share of the "
                    f"recorded training's CPU time (tiny nets, every probe every step): median {np.median(share):.0%}, "
                    f"max {max(share):.0%}")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.doctor", description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", help="scenario names (default: all)")
    parser.add_argument("--ci", action="store_true", help="the test suite's subset only")
    parser.add_argument("--out", help="folder for the run files (default: a temporary folder)")
    parser.add_argument("--no-timing", action="store_true", help="skip the 10^4 x 150 timing")
    parser.add_argument("--jobs", type=int, default=1, help="scenarios recorded at once (processes)")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    chosen = [s for s in SCENARIOS if (not args.only or s.name in args.only) and (not args.ci or s.ci)]
    folder = args.out or tempfile.mkdtemp(prefix="doctor-bench-")
    os.makedirs(folder, exist_ok=True)
    print(f"doctor benchmark: {len(chosen)} scenarios ({sum(s.healthy for s in chosen)} healthy), files in {folder}; "
          f"load average at start {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    results = []
    if args.jobs > 1:
        import multiprocessing

        with multiprocessing.get_context("spawn").Pool(args.jobs) as pool:
            runs = pool.imap(functools.partial(recorded, folder=folder), [s.name for s in chosen])
            for scenario, made in zip(chosen, runs, strict=True):
                results.append(_scored(scenario, made))
                print(_line(results[-1]), flush=True)
    else:
        for scenario in chosen:
            results.append(run_scenario(scenario, folder))
            print(_line(results[-1]), flush=True)
    table, ok = report(results)
    print(f"\nper symptom (found = right rule, layer and onset, after the fact; live = found while training by "
          f"attach(live={LIVE_EVERY}), delay = step of its finding event - true onset):")
    print(table)
    print("\nlive detection per fault (onset measured in the scenario → step the live doctor wrote the finding):")
    print(delays(results))
    seconds = [r.seconds_diagnose for r in results]
    print(f"\nload + diagnose per scenario file: median {np.median(seconds) * 1e3:.0f} ms, "
          f"max {max(seconds) * 1e3:.0f} ms")
    if not args.no_timing:
        path = os.path.join(folder, "long_10000x150.h5")
        write_long_run(path, steps=10_000, parameters=150)
        wall, cpu = diagnose_seconds(path)
        micro = live_check_microseconds(parameters=150, steps=2000)
        print(f"load + diagnose at 10^4 steps x 150 parameters: {cpu:.2f} s CPU, {wall:.2f} s wall (best of 3; "
              f"target ≤ {DIAGNOSE_TARGET_SECONDS:g} s; the wall time includes waiting for a core when the machine "
              "is shared)")
        print(f"live check at 150 parameters (GradStats + UpdateRatio + loss every step, 256-record buffers): "
              f"{micro[2]:.0f} us CPU on average; wall median {micro[0]:.0f} us, 99th percentile {micro[1]:.0f} us")
        ok &= cpu <= DIAGNOSE_TARGET_SECONDS
    print(f"load average at end {os.getloadavg()[0]:.2f}; targets {'met' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
