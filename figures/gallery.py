"""The gallery: ``index.html`` (every catalogue item with its picture or table, caption and the document's
claim; unimplemented items listed as missing) and ``summary.md`` (captions and key numbers)."""

from __future__ import annotations

import html
import os
from collections.abc import Mapping
from pathlib import Path

from figures.base import FigureOutput
from figures.catalogue import DOCUMENTS, EXTRA_ITEMS, ITEMS


def _numbers_html(numbers: Mapping[str, object]) -> str:
    if not numbers:
        return ""
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(_fmt(v))}</td></tr>" for k, v in numbers.items())
    return f"<table class='numbers'>{rows}</table>"


def _fmt(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _item_html(
    item_id: str, title: str, claim: str | None, output: FigureOutput | None, out_dir: Path, extra: bool = False,
    failure: str | None = None,
) -> str:
    mark = " <span class='extra'>(extra: not in the document)</span>" if extra else ""
    head = f"<h3 id='{item_id}'>{html.escape(item_id)} — {html.escape(title)}{mark}</h3>"
    if failure is not None:
        return head + f"<p class='missing'>Not drawn: {html.escape(failure)}</p>"
    if output is None:
        return head + "<p class='missing'>Not implemented yet: no figure is shown for this item.</p>"
    body = []
    for path in output.files:
        relative = html.escape(os.path.relpath(path, out_dir))
        if path.suffix == ".png":
            body.append(f"<img src='{relative}' alt='{html.escape(item_id)}'>")
        elif path.suffix == ".md" and output.table is not None:
            body.append(output.table.to_html(index=False, float_format=lambda v: f"{v:.4g}", border=0))
    links = " · ".join(f"<a href='{html.escape(os.path.relpath(p, out_dir))}'>{p.suffix[1:]}</a>" for p in output.files)
    return (
        head
        + "".join(body)
        + f"<p class='caption'>{html.escape(output.caption)}</p>"
        + (f"<p class='claim'><b>Document claims:</b> {html.escape(claim)}</p>" if claim else "")
        + _numbers_html(output.numbers)
        + f"<p class='files'>{links}</p>"
    )


def write_gallery(
    out_dir: Path,
    outputs: Mapping[str, FigureOutput],
    claims: Mapping[str, str],
    scale: str,
    selected: set[str] | None = None,
    failed: Mapping[str, str] | None = None,
) -> tuple[Path, Path]:
    """Write ``index.html`` and ``summary.md`` into ``out_dir``; returns both paths.

    ``selected`` limits the gallery to those IDs (``--only``); by default every catalogue item is listed.
    ``failed``: item ID -> why it was not drawn (the runs that failed, with their errors).
    """
    failed = failed or {}
    sections, summary = [], [f"# gradlens figures — scale `{scale}`", ""]
    for document, name in DOCUMENTS.items():
        items = [
            i for i in (*ITEMS, *EXTRA_ITEMS) if i.document == document and (selected is None or i.id in selected)
        ]
        if not items:
            continue
        sections.append(f"<h2>Document {html.escape(name)}</h2>")
        summary += [f"## Document {name}", ""]
        for item in items:
            output = outputs.get(item.id)
            extra = item in EXTRA_ITEMS
            sections.append(
                _item_html(item.id, item.title, claims.get(item.id), output, out_dir, extra, failed.get(item.id))
            )
            label = f"{item.id} (extra: not in the document)" if extra else item.id
            if item.id in failed:
                summary += [f"- **{label}**: not drawn: {failed[item.id]}", ""]
                continue
            if output is None:
                summary += [f"- **{label}**: not implemented", ""]
                continue
            summary += [f"- **{label}** — {output.caption}"]
            summary += [f"  - {k}: {_fmt(v)}" for k, v in output.numbers.items()]
            summary.append("")
    index = out_dir / "index.html"
    index.write_text(
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>gradlens figures ({html.escape(scale)})</title><style>"
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
        "img{max-width:100%;border:1px solid #eee}.caption{color:#333}.claim{color:#555}"
        ".missing{color:#a00}.extra{color:#07a;font-weight:normal}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px}"
        "</style></head><body>"
        f"<h1>gradlens figures — scale {html.escape(scale)}</h1>" + "".join(sections) + "</body></html>",
        encoding="utf-8",
    )
    summary_path = out_dir / "summary.md"
    summary_path.write_text("\n".join(summary), encoding="utf-8")
    return index, summary_path
