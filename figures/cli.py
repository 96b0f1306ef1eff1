"""``gradlens figures``: train what is missing, draw every selected item, write the gallery.

The repository's figures are not installed with the library: ``gradlens figures ARGS`` starts
``python -m figures ARGS`` in the checkout (see ``gradlens.cli``), so the library never imports ``figures``
and ``gradlens --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

import matplotlib.pyplot as plt
from tqdm.auto import tqdm

from analyses.estimate import Estimator, format_seconds
from analyses.executors import EXECUTORS, LocalExecutor, make_executor
from analyses.optional_data import NOT_RUN
from analyses.runner import RunSpec, plan, run_all, status
from figures.base import FigureInputs, FigureOutput, missing_keys, open_recorded
from figures.catalogue import EXTRA_ITEMS, ITEMS
from figures.gallery import write_gallery

SCALES = ("smoke", "quick", "medium", "paper")


def module_name(item_id: str) -> str:
    """``yt-tab-icushion`` -> ``figures.yt_tab_icushion``."""
    return "figures." + item_id.replace("-", "_")


def figure_module(item_id: str):
    """The module drawing ``item_id``, or None when the item is not implemented."""
    try:
        return importlib.import_module(module_name(item_id))
    except ModuleNotFoundError as error:
        if error.name == module_name(item_id):
            return None
        raise


def implemented() -> dict[str, object]:
    """ID -> module for every implemented catalogue item, in catalogue order, then the extra items."""
    found = {item.id: figure_module(item.id) for item in (*ITEMS, *EXTRA_ITEMS)}
    return {item_id: module for item_id, module in found.items() if module is not None}


def list_items() -> list[str]:
    """Lines of ``--list``: every catalogue ID (not the extra items), unimplemented ones marked."""
    done = implemented()
    return [item.id if item.id in done else f"{item.id}  (not implemented)" for item in ITEMS]


def select(only: list[str] | None) -> dict[str, object]:
    """The implemented modules to draw; an unknown or unimplemented ``--only`` ID is an error.

    An entry of ``only`` is an item ID (``yt-fig3``) or a document prefix (``yt``: every implemented item of
    that document, extra items included).
    """
    done = implemented()
    if not only:
        return done
    known = [item.id for item in (*ITEMS, *EXTRA_ITEMS)]
    prefixes = {item_id.split("-")[0] for item_id in known}
    chosen: list[str] = []
    for entry in only:
        if entry in prefixes:
            chosen += [item_id for item_id in known if item_id.startswith(entry + "-") and item_id in done]
            continue
        if entry not in known:
            raise KeyError(f"unknown figure ID or document prefix {entry!r}; `gradlens figures --list` prints the "
                           f"IDs, prefixes are {', '.join(sorted(prefixes))}")
        if entry not in done:
            raise ValueError(f"figure {entry} is not implemented yet; `gradlens figures --list` marks which are")
        chosen.append(entry)
    return {item_id: done[item_id] for item_id in dict.fromkeys(chosen)}


def needed_runs(modules: dict[str, object], scale: str) -> dict[str, list[RunSpec]]:
    """Analysis -> its runs at ``scale``, for every analysis the ``modules`` read."""
    specs: dict[str, list[RunSpec]] = {}
    for module in modules.values():
        for analysis in module.ANALYSES:
            specs.setdefault(analysis, plan(analysis, scale))
    return specs


def failure_note(failures: dict[RunSpec, str], specs: list[RunSpec]) -> str:
    """'2 of 12 runs of sc_resnet failed: <key> (model ..., seed ...): <error>; ...' for the failed ``specs``."""
    failed = [spec for spec in specs if spec in failures]
    described = []
    for spec in failed:
        labels = ", ".join(f"{k} {spec.params[k]}" for k in ("model", "depth", "seed") if k in spec.params)
        described.append(f"{spec.key}" + (f" ({labels})" if labels else "") + f": {failures[spec]}")
    return f"{len(failed)} of {len(specs)} runs of {failed[0].analysis} failed: " + "; ".join(described)


def make_figures(
    only: list[str] | None,
    scale: str,
    out: Path,
    *,
    data_dir: str | None = None,
    jobs: int = 1,
    force: bool = False,
    progress: bool = True,
    executor=None,
    failed: dict[str, str] | None = None,
    device: str = "auto",
) -> dict[str, FigureOutput]:
    """Run what the selected items need, draw them, write the gallery; returns ID -> output.

    ``executor`` (default: :class:`analyses.executors.LocalExecutor` with ``jobs`` on ``device``) does the runs
    (an executor given carries its own device). An item
    whose runs failed (after their retries) is not drawn: the gallery and ``summary.md`` name the failed runs
    with their errors, every other item is still drawn, and ``failed`` (when given) receives item ID -> why.
    """
    failed = {} if failed is None else failed
    modules = select(only)
    specs = needed_runs(modules, scale)
    outcome = run_all(
        [spec for group in specs.values() for spec in group],
        out / "runs",
        data_dir=data_dir,
        executor=executor or LocalExecutor(jobs, device=device),
        force=force,
        progress=progress,
    )
    broken = {a: failure_note(outcome.failures, group) for a, group in specs.items()
              if any(spec in outcome.failures for spec in group)}
    recorded = {analysis: [open_recorded(outcome.paths[spec]) for spec in group]
                for analysis, group in specs.items() if analysis not in broken}
    outputs: dict[str, FigureOutput] = {}
    for item_id, module in modules.items():
        reasons = [broken[a] for a in module.ANALYSES if a in broken]
        if reasons:
            failed[item_id] = "; ".join(reasons)
            continue
        for analysis, keys in module.NEEDS.items():
            for run in recorded[analysis]:
                lacking = missing_keys(run, keys)
                if lacking:
                    raise ValueError(f"{item_id} needs {lacking} but {run.path} does not hold them; rerun with --force")
        inputs = FigureInputs(scale, {a: recorded[a] for a in module.ANALYSES})
        outputs[item_id] = module.draw(inputs, out / "items")
        if outputs[item_id].figure is not None:
            plt.close(outputs[item_id].figure)
    claims = {item_id: module.CLAIM for item_id, module in modules.items()}
    write_gallery(out, outputs, claims, scale, selected=set(modules) if only else None, failed=failed)
    return outputs


def plan_lines(
    only: list[str] | None, scale: str, out: Path, *, data_dir: str | None = None, force: bool = False,
    measure: bool = True,
    progress: bool = False,
    jobs: int = 1,
) -> list[str]:
    """What ``--plan`` prints: per item the runs to do and to reuse and their estimated cost on the CPU and on
    a CUDA GPU, then the total.

    Nothing runs and nothing is written but the timing cache (``<out>/runs/timings.json``). A run to do is
    missing, or unfinished (it will resume: its estimate still counts every step). A run whose data is absent
    (``optional_data`` runs) or refused is not work: it is listed under its row as "not run" (it will leave a
    not-run marker) or "fails" (it will stop with the data error), with the reason. The CPU is timed with the
    torch threads each of ``jobs`` local workers gets. See :mod:`analyses.estimate` for what the estimates are
    based on (the CUDA one is modelled, and says so, unless this machine has a GPU).
    """
    modules = select(only)
    specs = needed_runs(modules, scale)
    root = out / "runs"
    threads = max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else None
    estimator = Estimator(root, data_dir, measure=measure, threads=threads)
    state = {spec: "missing" if force else status(spec.path(root)) for group in specs.values() for spec in group}
    costs = {spec: estimator.cost(spec.params) for spec in tqdm(state, desc="timing models", disable=not progress)}
    # a run that will not train (its data absent or refused) is listed with the reason, not counted as work
    blocked = {spec: why for spec in state if state[spec] != "finished" and (why := estimator.not_run(spec.params))}

    def todo(group: list[RunSpec]) -> list[RunSpec]:
        return [s for s in group if state[s] != "finished" and s not in blocked]

    def total(group: list[RunSpec]) -> tuple[int, str, str]:
        """Steps, and the estimated time on the CPU and on CUDA ('+': some runs could not be estimated)."""
        steps = sum(costs[s].steps or 0 for s in todo(group))
        times = []
        for seconds in ("seconds", "cuda_seconds"):
            known = [getattr(costs[s], seconds) for s in todo(group)]
            unknown = any(costs[s].steps is not None and t is None for s, t in zip(todo(group), known, strict=True))
            times.append(format_seconds(sum(t or 0.0 for t in known)) + ("+" if unknown else ""))
        return steps, times[0], times[1]

    lines = [f"plan: scale {scale}, runs in {root}", "",
             f"{'item':<20} {'analysis':<22} {'runs':>5} {'reuse':>5} {'resume':>6} {'do':>5} {'steps':>11} "
             f"{'est. cpu':>10} {'est. cuda':>10}"]
    for item_id, module in modules.items():
        for analysis in module.ANALYSES:
            group = specs[analysis]
            reuse = sum(state[s] == "finished" for s in group)
            resume = sum(state[s] not in ("finished", "missing", "unreadable", NOT_RUN) for s in todo(group))
            steps, cpu, cuda = total(group)
            lines.append(
                f"{item_id:<20} {analysis:<22} {len(group):>5} {reuse:>5} {resume:>6} {len(todo(group)):>5} "
                f"{steps:>11,} {cpu:>10} {cuda:>10}"
            )
            reasons: dict[tuple[str, str], int] = {}
            for spec in group:
                if spec in blocked:
                    verdict = "not run" if spec.params.get("optional_data") else "fails"
                    reasons[verdict, blocked[spec]] = reasons.get((verdict, blocked[spec]), 0) + 1
            lines += [f"{'':<20} {verdict} ({n} runs): {why}" for (verdict, why), n in reasons.items()]
    everything = list(state)
    steps, cpu, cuda = total(everything)
    to_do = len(todo(everything))
    reused = sum(state[s] == "finished" for s in everything)
    lacking = f", {len(blocked)} not run for lack of data" if blocked else ""
    bases = sorted({costs[s].basis for s in everything} - {"-"})
    lines += [
        "",
        f"distinct runs: {len(everything)} ({to_do} to do, {reused} to reuse{lacking}); "
        f"{steps:,} optimizer steps; estimated {cpu} of compute on {estimator.kind}, or {cuda} on one CUDA GPU "
        f"({estimator.cuda_basis}), one run after another",
        "estimate: steps = epochs × ceil(training images / batch) (images from: " + ", ".join(bases) + "); seconds "
        "per step measured for each model on random inputs at the run's batch here (the least of repeated steps' "
        "wall and CPU times), plus the evaluation's forwards and loading the data (probes not included; '+': some "
        "models could not be timed; computed results are not estimated); timings cached in "
        + str(root / "timings.json"),
    ]
    return lines


def _executor(args: argparse.Namespace):
    shared = {"auto": None, "yes": True, "no": False}[args.shared_out]
    if args.executor == "local" and (args.shared_out != "auto" or args.resources):
        raise ValueError("--shared-out and --resources need --executor ray")
    return make_executor(args.executor, jobs=args.jobs, address=args.address, shared=shared,
                         max_retries=args.max_retries, resources=args.resources or (), device=args.device)


def device_arg(value: str) -> str:
    """``--device``: auto, cpu, cuda or cuda:K (argparse's error names the value otherwise)."""
    from gradlens.train import DEVICE_NAMES, check_device_name

    try:
        if value == "meta":  # the library's test device: no data, nothing to draw
            raise ValueError(f"device {value!r} is not supported; use {DEVICE_NAMES}")
        return check_device_name(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def data_dir_arg(values: list[str] | None) -> str | None:
    """The ``--data-dir`` values (repeatable, each one folder or several separated by ``os.pathsep``) as one
    ``os.pathsep``-separated string of absolute folders, the form runs and workers receive; None when not given."""
    if not values:
        return None
    folders = [part for value in values for part in value.split(os.pathsep) if part]
    return os.pathsep.join(str(Path(folder).expanduser().resolve()) for folder in folders)


def _command(args: argparse.Namespace) -> int:
    if args.list:
        print("\n".join(list_items()))
        return 0
    out = Path(args.out or f"gradlens-figures/{args.scale}")
    data_dir = data_dir_arg(args.data_dir)
    if args.plan:
        lines = plan_lines(args.only, args.scale, out, data_dir=data_dir, force=args.force, progress=not args.quiet,
                           jobs=args.jobs)
        print("\n".join(lines))
        return 0
    executor = _executor(args)
    if isinstance(executor, LocalExecutor):  # the runs train here: a device this machine lacks stops them all now
        from gradlens.train import resolve_device

        resolve_device(args.device)
    out.mkdir(parents=True, exist_ok=True)
    failed: dict[str, str] = {}
    try:
        outputs = make_figures(args.only, args.scale, out, data_dir=data_dir, force=args.force,
                               progress=not args.quiet, executor=executor, failed=failed)
    finally:
        if hasattr(executor, "close"):
            executor.close()
    print(f"{len(outputs)} items drawn; gallery: {(out / 'index.html').resolve()}")
    print(f"summary: {(out / 'summary.md').resolve()}")
    for item_id, reason in failed.items():
        print(f"not drawn: {item_id}: {reason}", file=sys.stderr)
    return 1 if failed else 0


EPILOG = """executors:
  local (default)  the runs go to --jobs worker processes on this machine (1: this process).
  ray              each run is one Ray task, on the cluster at --address (host:6379, ray://host:10001 or auto;
                   default: a Ray instance started on this machine). A task asks for 1 GPU when its run will
                   use one (see devices), else 1 CPU (--resources changes that, per analysis). Workers get the
                   repository's analyses/ and gradlens/ packages through Ray's runtime_env (no checkout on the
                   nodes); the data must be under the same --data-dir path (or $GRADLENS_DATA) on every node. Each run's
                   HDF5 files come back to OUT/runs through Ray's object store, unless OUT is a folder every
                   node reaches at the same path (--shared-out yes, or found by a probe file with the default
                   auto): then runs write there and a retried run resumes from its last checkpoint.
                   Needs: pip install -c constraints.txt 'gradlens[ray]'.

  A worker that dies mid-run is retried (--max-retries, both executors); a run that keeps failing, or raises,
  is named with its error in summary.md and index.html, the other items are still drawn, and the exit
  status is 1.

devices (--device): auto (default: the GPU when torch sees one, else the CPU), cpu, cuda (the current GPU) or
  cuda:K. The model and the whole dataset move to the device once; float32 stays float32 (no TF32), and on
  CUDA each run holds torch.use_deterministic_algorithms(True), deterministic cuDNN and
  CUBLAS_WORKSPACE_CONFIG=:4096:8, so a seed gives the same run on that device twice. The device is not part
  of a run's key: finished runs are reused whichever device trained them (their files name it). Local
  workers (--jobs) share the one GPU; with --executor ray a run asks for a GPU only when it trains (computed
  results never) and --device is cuda, or auto on a cluster with GPUs; it then uses the GPU Ray gives it.

start a Ray cluster (the same Python environment on every node):
  head:    ray start --head --port 6379 --num-gpus N
  workers: ray start --address HEAD_IP:6379
  then:    gradlens figures --scale paper --executor ray --address HEAD_IP:6379 --data-dir /data
  (stop with `ray stop` on each node)

--plan prints, before anything runs, the runs each item needs (to do / to reuse) and an estimate of their
cost on the CPU and on a CUDA GPU: optimizer steps × seconds per step, measured for each model on this
machine's CPU (with the threads each of --jobs workers gets) and GPU, or for CUDA without a GPU here modelled
from the step's kernel and FLOP counts and labelled so (cached in OUT/runs/timings.json)."""


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``gradlens figures`` (``python -m figures``)."""
    parser = argparse.ArgumentParser(
        prog="gradlens figures",
        description="Trains the analyses a figure needs (reusing finished runs, resuming interrupted ones), "
        "draws each selected item as PNG+PDF (tables as Markdown+CSV) with a caption, and writes "
        "index.html and summary.md.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--only", nargs="+", metavar="ID", help="catalogue IDs, or document prefixes (sc, sk, van, "
                        "yw, yt: all of that document's items), to draw (default: all implemented)")
    parser.add_argument("--scale", choices=SCALES, default="quick",
                        help="smoke, quick, medium or paper (default: quick; medium: up to 2 h per document on a "
                        "2-core CPU, the documents' batch sizes and schedule shapes, see docs/figures.md)")
    parser.add_argument("--data-dir", action="append", metavar="DIR",
                        help="folder with dataset files (MNIST, Fashion-MNIST, CIFAR, EMNIST); repeat it, or separate "
                        f"folders with {os.pathsep!r}, to name several: each dataset is read from the first folder "
                        "that holds it and passes the identity checks, then from the operating system's dataset "
                        "folders (/usr/share/datasets: Debian's dataset-fashion-mnist); default: $GRADLENS_DATA "
                        "(the same form)")
    parser.add_argument("--jobs", type=int, default=1, help="parallel worker processes for independent runs "
                        "(local executor)")
    parser.add_argument("--device", type=device_arg, default="auto", metavar="{auto,cpu,cuda,cuda:K}",
                        help="where the runs train (default auto: the GPU when there is one; see below)")
    parser.add_argument("--out", help="output folder (default: gradlens-figures/SCALE)")
    parser.add_argument("--force", action="store_true", help="redo runs even if finished")
    parser.add_argument("--list", action="store_true", help="print every catalogue ID, marking unimplemented ones")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--plan", action="store_true", help="print the runs to do and to reuse per item and their "
                        "estimated cost, then stop")
    parser.add_argument("--executor", choices=EXECUTORS, default="local", help="where runs happen: local "
                        "(default) or ray (see below)")
    parser.add_argument("--address", help="Ray cluster address (--executor ray; default: start Ray here)")
    parser.add_argument("--shared-out", choices=("auto", "yes", "no"), nargs="?", const="yes", default="auto",
                        help="is OUT reachable from every Ray node at the same path? (default auto: probed)")
    parser.add_argument("--max-retries", type=int, default=2, help="retries of a run whose worker died (default 2)")
    parser.add_argument("--resources", action="append", metavar="[ANALYSIS:]KEY=N,...",
                        help="Ray resources per run, e.g. num_cpus=2 or noise_stability:num_gpus=0.5 (repeatable)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m figures``: one-line errors with exit status 2."""
    args = build_parser().parse_args(argv)
    try:
        return _command(args)
    except (ValueError, KeyError, FileNotFoundError, FileExistsError, OSError, RuntimeError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"gradlens figures: error: {message}", file=sys.stderr)
        return 2
