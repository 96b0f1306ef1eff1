"""``gradlens figures``: train what is missing, draw every selected item, write the gallery.

The repository's figures are not installed with the library: ``gradlens figures ARGS`` starts
``python -m figures ARGS`` in the checkout (see ``gradlens.cli``), so the library never imports ``figures``
and ``gradlens --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

import matplotlib.pyplot as plt

from analyses.runner import RunSpec, ensure_runs, plan
from figures.base import FigureInputs, FigureOutput, missing_keys, open_recorded
from figures.catalogue import EXTRA_ITEMS, ITEMS
from figures.gallery import write_gallery

SCALES = ("smoke", "quick", "paper")


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


def make_figures(
    only: list[str] | None,
    scale: str,
    out: Path,
    *,
    data_dir: str | None = None,
    jobs: int = 1,
    force: bool = False,
    progress: bool = True,
) -> dict[str, FigureOutput]:
    """Run what the selected items need, draw them, write the gallery; returns ID -> output."""
    modules = select(only)
    specs: dict[str, list[RunSpec]] = {}
    for module in modules.values():
        for analysis in module.ANALYSES:
            specs.setdefault(analysis, plan(analysis, scale))
    paths = ensure_runs(
        [spec for group in specs.values() for spec in group],
        out / "runs",
        data_dir=data_dir,
        jobs=jobs,
        force=force,
        progress=progress,
    )
    recorded = {analysis: [open_recorded(paths[spec]) for spec in group] for analysis, group in specs.items()}
    outputs: dict[str, FigureOutput] = {}
    for item_id, module in modules.items():
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
    write_gallery(out, outputs, claims, scale, selected=set(modules) if only else None)
    return outputs


def _command(args: argparse.Namespace) -> None:
    if args.list:
        print("\n".join(list_items()))
        return
    out = Path(args.out or f"gradlens-figures/{args.scale}")
    out.mkdir(parents=True, exist_ok=True)
    outputs = make_figures(
        args.only, args.scale, out, data_dir=args.data_dir, jobs=args.jobs, force=args.force, progress=not args.quiet
    )
    print(f"{len(outputs)} items drawn; gallery: {(out / 'index.html').resolve()}")
    print(f"summary: {(out / 'summary.md').resolve()}")


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``gradlens figures`` (``python -m figures``)."""
    parser = argparse.ArgumentParser(
        prog="gradlens figures",
        description="Trains the analyses a figure needs (reusing finished runs, resuming interrupted ones), "
        "draws each selected item as PNG+PDF (tables as Markdown+CSV) with a caption, and writes "
        "index.html and summary.md.",
    )
    parser.add_argument("--only", nargs="+", metavar="ID", help="catalogue IDs, or document prefixes (sc, sk, van, "
                        "yw, yt: all of that document's items), to draw (default: all implemented)")
    parser.add_argument("--scale", choices=SCALES, default="quick", help="smoke, quick or paper (default: quick)")
    parser.add_argument("--data-dir", help="folder with MNIST/CIFAR files (default: $GRADLENS_DATA)")
    parser.add_argument("--jobs", type=int, default=1, help="parallel worker processes for independent runs")
    parser.add_argument("--out", help="output folder (default: gradlens-figures/SCALE)")
    parser.add_argument("--force", action="store_true", help="redo runs even if finished")
    parser.add_argument("--list", action="store_true", help="print every catalogue ID, marking unimplemented ones")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m figures``: one-line errors with exit status 2."""
    args = build_parser().parse_args(argv)
    try:
        _command(args)
    except (ValueError, KeyError, FileNotFoundError, FileExistsError, OSError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"gradlens figures: error: {message}", file=sys.stderr)
        return 2
    return 0
