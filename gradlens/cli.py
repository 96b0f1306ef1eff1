"""The ``gradlens`` command line: demo, report, compare, doctor, watch, export, info.

Errors in arguments or inputs print one line (``gradlens: error: ...``) and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points
from pathlib import Path


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (the usage is one ``--help`` away)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"gradlens: error: {message} (see `{self.prog} --help`)\n")


def _cmd_demo(args: argparse.Namespace) -> None:
    from gradlens.demo import DemoConfig, run_demo

    config = DemoConfig(depth=args.depth, epochs=args.epochs, seed=args.seed, device=args.device)
    report = run_demo(config, out_dir=args.out, force=args.force, progress=not args.quiet)
    print(f"report: {os.path.abspath(report)}")


def _load_all(paths: Sequence[str]) -> list:
    from gradlens.loader import load

    return [load(path) for path in paths]


def _default_out(path: str, suffix: str) -> str:
    return os.path.splitext(path)[0] + suffix


def _refuse_existing(path: str, force: bool) -> None:
    if os.path.exists(path) and not force:
        raise FileExistsError(f"{path} exists; pass --force to replace it or --out to write elsewhere")


def _cmd_report(args: argparse.Namespace) -> None:
    from gradlens.report import write_report

    out = args.out or _default_out(args.run, ".html")
    _refuse_existing(out, args.force)
    print(f"report: {os.path.abspath(write_report(_load_all([args.run]), out))}")


def _cmd_compare(args: argparse.Namespace) -> None:
    from gradlens.report import write_report

    if len(args.runs) < 2:
        raise ValueError(
            f"compare needs at least two runs, got {len(args.runs)}; use `gradlens report` for one"
        )
    out = args.out or "compare.html"
    _refuse_existing(out, args.force)
    print(f"report: {os.path.abspath(write_report(_load_all(args.runs), out, title='gradlens comparison'))}")


def _cmd_doctor(args: argparse.Namespace) -> int:
    from gradlens.doctor import doctor

    text, status = doctor(args.runs, as_json=args.json, loss=args.loss, num_classes=args.classes)
    print(text)
    return status


def _cmd_watch(args: argparse.Namespace) -> int:
    from gradlens.watch import serve, watch
    from gradlens.watch.server import DEFAULT_HOST

    if args.port is not None:
        if args.out is not None:
            raise ValueError("watch --out writes a file; with --port the page is served instead: give one of the two")
        host = args.host if args.host is not None else DEFAULT_HOST
        return serve(args.run, args.port, host=host, every=args.every, stale=args.stale, timeout=args.timeout)
    if args.host is not None:
        raise ValueError(f"watch --host {args.host} needs --port N (without --port, watch writes a file)")
    return watch(args.run, out=args.out, every=args.every, timeout=args.timeout, stale=args.stale)


def _cmd_export(args: argparse.Namespace) -> None:
    from gradlens.export import export_tables, export_tensorboard

    targets = {"tensorboard": args.tensorboard, "csv": args.csv, "parquet": args.parquet}
    if not any(targets.values()):
        raise ValueError("export needs at least one of --tensorboard DIR, --csv DIR, --parquet DIR")
    (run,) = _load_all([args.run])
    if args.tensorboard:
        counts = export_tensorboard(run, args.tensorboard)
        print(
            f"tensorboard: {os.path.abspath(args.tensorboard)} ({counts['scalars']} scalars, "
            f"{counts['histograms']} histograms)"
        )
    for fmt in ("csv", "parquet"):
        if targets[fmt]:
            paths = export_tables(run, targets[fmt], fmt)
            print(f"{fmt}: {os.path.abspath(targets[fmt])} ({len(paths)} files)")


def _when(unix: float | None, now: float) -> str:
    """``2026-12-03T05:40:00+00:00 (612 s ago)``, or ``never`` for None."""
    from datetime import UTC, datetime

    if unix is None:
        return "never"
    return f"{datetime.fromtimestamp(unix, UTC).isoformat(timespec='seconds')} ({now - unix:.0f} s ago)"


def _status_line(run) -> str:
    """The status, and for a ``running`` file whether its writer is alive (its lock) and what to do if not."""
    from gradlens.lock import read_holder, writer

    status = run.status
    if status != "running":
        return status
    live = writer(run.path)
    if live is not None:
        return f"running (writer alive: process {live.get('pid')} on host {live.get('host')!r})"
    holder = read_holder(run.path)
    who = f"process {holder.get('pid')} on host {holder.get('host')!r} is gone" if holder else "no writer holds it"
    return f"running, but the writer is not alive ({who}); `gradlens repair {run.path}` closes the file"


def _cmd_info(args: argparse.Namespace) -> None:
    import time

    (run,) = _load_all([args.run])
    print(f"file:    {os.path.abspath(run.path)}")
    print(f"status:  {_status_line(run)}")
    print(f"created: {run.meta.get('created', 'unknown')}")
    print(f"flushed: {_when(run.last_flush, time.time())}")
    print(f"model:   {json.dumps(run.meta.get('model', {}))}")
    print(f"config:  {json.dumps(run.meta.get('config', {}))}")
    print(f"layers:  {len(run.layers)}")
    for row in run.layers.itertuples():
        print(f"  {row.name:<32} {row.kind:<8} {str(list(row.shape)):<20} {row.params}")
    for probe in run.probes:  # counters and two step reads: the cost does not grow with the run
        span = run.span(probe)
        steps = f"steps {span[0]}..{span[1]}" if span else "no records"
        print(f"probe:   {probe} ({run.n_records(probe)} records, {steps})")
    names = run.scalar_names()
    if names:
        print(f"scalars: {', '.join(sorted(names))}")
    events = run.events()
    if not events.empty:
        counts = events["kind"].value_counts(sort=False)
        print(f"events:  {len(events)} ({', '.join(f'{kind} {n}' for kind, n in counts.items())})")


def _cmd_repair(args: argparse.Namespace) -> None:
    from gradlens.recorder import repair

    done = repair(args.run, backup=not args.no_backup)
    rows = ", ".join(f"{table} {n}" for table, n in done.rows.items())
    if not done.repaired:
        print(f"{args.run}: nothing to repair (closed, status {done.status}); any HDF5 tool opens it")
        return
    backup = f"; the original is kept as {done.backup}" if done.backup else ""
    print(f"repaired: {args.run} (status {done.status}; committed rows kept: {rows}){backup}")


def repository_root() -> Path | None:
    """The checkout holding this gradlens package and the repository's ``figures/`` folder, if any."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / "figures" / "cli.py").is_file() and (root / "analyses").is_dir() else None


def _cmd_figures(args: argparse.Namespace) -> int:
    """Run ``python -m figures ARGS`` in the repository checkout (its figures are not installed)."""
    root = repository_root()
    if root is None:
        raise FileNotFoundError(
            "gradlens figures runs from a gradlens repository checkout (figures/ and analyses/ beside the "
            "gradlens package); install gradlens from a clone with `pip install -e .`"
        )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    return subprocess.call([sys.executable, "-m", "figures", *args.figure_args], env=env)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``gradlens`` command."""
    parser = _Parser(prog="gradlens", description="Gradient-flow analysis and diagnostics for PyTorch.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    demo = commands.add_parser(
        "demo",
        help="train deep plain and residual MLPs on the embedded digits; write a comparison report",
        description="Trains a deep plain MLP and the same MLP with identity skips on scikit-learn's embedded "
        "8x8 digits, records GradStats at every step, and writes both HDF5 files and an HTML report.",
    )
    demo.add_argument("--out", default="gradlens-demo", help="output folder (default: gradlens-demo)")
    demo.add_argument("--depth", type=int, default=30, help="hidden blocks per network (default: 30)")
    demo.add_argument("--epochs", type=int, default=10, help="training epochs (default: 10)")
    demo.add_argument(
        "--seed", type=int, default=0, help="seed for weights and mini-batch order (default: 0)"
    )
    demo.add_argument("--device", default="auto", help="where both nets train: auto (default: the GPU when there "
                      "is one), cpu, cuda or cuda:K")
    demo.add_argument("--force", action="store_true", help="replace an earlier demo in --out")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(func=_cmd_demo)

    report = commands.add_parser("report", help="HTML report of one recorded run")
    report.add_argument("run", help="a gradlens HDF5 file")
    report.add_argument("--out", help="HTML file to write (default: RUN.html)")
    report.add_argument("--force", action="store_true", help="replace an existing HTML file")
    report.set_defaults(func=_cmd_report)

    compare = commands.add_parser("compare", help="HTML report overlaying several runs")
    compare.add_argument("runs", nargs="+", help="gradlens HDF5 files")
    compare.add_argument("--out", help="HTML file to write (default: compare.html)")
    compare.add_argument("--force", action="store_true", help="replace an existing HTML file")
    compare.set_defaults(func=_cmd_compare)

    doctor = commands.add_parser(
        "doctor",
        help="say what is wrong with runs, with evidence; exit 0 healthy, 1 severe finding, 2 bad input",
        description="Applies the rules of docs/doctor.md (vanishing/exploding gradients by depth and size, "
        "non-finite values, dead and saturated units, frozen, gradient-less and never-updated parameters, a loss "
        "not decreasing, unstable, at chance level or overfitting, dominating clipping, learning rate from "
        "update ratios, AMP skips, probe errors, crashed/killed runs) and prints each finding with its first "
        "step, layers, evidence, rule and ranked fixes.",
    )
    doctor.add_argument("runs", nargs="+", help="gradlens HDF5 files")
    doctor.add_argument(
        "--json", action="store_true", help="print the findings as JSON (schema in docs/doctor.md) instead of text"
    )
    doctor.add_argument("--loss", metavar="NAME", help="the logged scalar that is the training loss (default: names "
                        "like loss, nll, xent)")
    doctor.add_argument("--classes", type=int, metavar="K", help="number of classes of a classifier: its chance "
                        "loss is ln K (default: meta num_classes, or the last layer's outputs)")
    doctor.set_defaults(func=_cmd_doctor)

    watch = commands.add_parser(
        "watch", help="follow a run while it trains: a page led by the doctor's verdict (a file, or served)"
    )
    watch.add_argument("run", help="the gradlens HDF5 file being written (may not exist yet)")
    watch.add_argument("--out", help="HTML file to keep current (default: RUN.html; not with --port)")
    watch.add_argument(
        "--port", type=int, help="serve the page at http://HOST:PORT/ instead of writing a file (0: any free port)"
    )
    watch.add_argument("--host", help="address to serve on with --port (default: 127.0.0.1, this machine only)")
    watch.add_argument(
        "--every", type=float, default=1.0, help="seconds between looks at the run / page updates (default: 1)"
    )
    watch.add_argument(
        "--timeout", type=float, help="stop after this many seconds (default: file: when the run ends; served: Ctrl-C)"
    )
    watch.add_argument(
        "--stale", type=float, default=120.0, help="say the run stopped after this many seconds without a flush"
    )
    watch.set_defaults(func=_cmd_watch)

    export = commands.add_parser("export", help="write a run as TensorBoard event files or CSV/Parquet tables")
    export.add_argument("run", help="a gradlens HDF5 file")
    export.add_argument("--tensorboard", metavar="DIR", help="TensorBoard log directory to write")
    export.add_argument("--csv", metavar="DIR", help="folder for tidy CSV tables")
    export.add_argument("--parquet", metavar="DIR", help="folder for tidy Parquet tables")
    export.set_defaults(func=_cmd_export)

    info = commands.add_parser("info", help="print what a run file holds")
    info.add_argument("run", help="a gradlens HDF5 file")
    info.set_defaults(func=_cmd_info)

    repair = commands.add_parser(
        "repair",
        help="close the file of a killed run so that any HDF5 tool (h5py, HDFView) opens it",
        description="Rewrites a run whose writer was killed (status running, no live writer) with exactly its "
        "committed rows and status 'interrupted', replacing it atomically; the original is kept as RUN.bak.",
    )
    repair.add_argument("run", help="a gradlens HDF5 file")
    repair.add_argument("--no-backup", action="store_true", help="do not keep the original as RUN.bak")
    repair.set_defaults(func=_cmd_repair)

    figures = commands.add_parser(
        "figures",
        help="regenerate the documents' figures and tables (repository checkout; `gradlens figures --help`)",
        add_help=False,
        prefix_chars="\0",
    )
    figures.add_argument("figure_args", nargs=argparse.REMAINDER)
    figures.set_defaults(func=_cmd_figures)

    # Commands contributed by installed packages (group `gradlens.commands`); the library never imports them.
    for entry in entry_points(group="gradlens.commands"):
        entry.load()(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``gradlens`` console script."""
    args = build_parser().parse_args(argv)
    try:
        status = args.func(args)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (`gradlens info RUN | head -2`): stop quietly, as a command killed by SIGPIPE
        # would. stdout goes to devnull so that flushing it at exit raises nothing more.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + 13
    except (ValueError, KeyError, FileNotFoundError, FileExistsError, OSError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"gradlens: error: {message}", file=sys.stderr)
        return 2
    return status or 0


if __name__ == "__main__":
    sys.exit(main())
