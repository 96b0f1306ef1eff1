"""The ``gradlens`` command line: demo, report, compare, info.

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

    config = DemoConfig(depth=args.depth, epochs=args.epochs, seed=args.seed)
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


def _cmd_info(args: argparse.Namespace) -> None:
    (run,) = _load_all([args.run])
    print(f"file:    {os.path.abspath(run.path)}")
    print(f"status:  {run.status}")
    print(f"model:   {json.dumps(run.meta.get('model', {}))}")
    print(f"config:  {json.dumps(run.meta.get('config', {}))}")
    print(f"layers:  {len(run.layers)}")
    for row in run.layers.itertuples():
        print(f"  {row.name:<32} {row.kind:<8} {str(list(row.shape)):<20} {row.params}")
    for probe in run.probes:
        steps = run.frame(probe)["step"].unique()
        span = f"steps {steps.min()}..{steps.max()}" if len(steps) else "no records"
        print(f"probe:   {probe} ({len(steps)} records, {span})")
    scalars = run.scalars()
    if not scalars.empty:
        print(f"scalars: {', '.join(sorted(scalars['name'].unique()))}")


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

    info = commands.add_parser("info", help="print what a run file holds")
    info.add_argument("run", help="a gradlens HDF5 file")
    info.set_defaults(func=_cmd_info)

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
    except (ValueError, KeyError, FileNotFoundError, FileExistsError, OSError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"gradlens: error: {message}", file=sys.stderr)
        return 2
    return status or 0


if __name__ == "__main__":
    sys.exit(main())
