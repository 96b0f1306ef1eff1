"""The gallery: ``index.html`` (every catalogue item with its picture or table, caption and the document's
claim; unimplemented items listed as missing) and ``summary.md`` (captions and key numbers)."""

from __future__ import annotations

import html
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from matplotlib.text import Text

from figures.base import FigureOutput
from figures.catalogue import DOCUMENTS, EXTRA_ITEMS, ITEMS


def _numbers_html(numbers: Mapping[str, object]) -> str:
    if not numbers:
        return ""
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(_fmt(v))}</td></tr>" for k, v in numbers.items())
    return f"<table class='numbers'>{rows}</table>"


def _fmt(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


DESCRIBED = re.compile(
    r"(?:(?<!\S)data: (?P<data>(?:(?!(?<!\S)data: ).)+?); )?scale: (?P<scale>[^;]+?); seeds: (?P<seeds>[^;]+?)"
    r"(?:; epochs: (?P<epochs>[^;]+?))?\.(?=\s|$)"
)
"""The clause :func:`figures.base.describe` ends a caption with: what the runs shown actually used."""
STANDS_IN = re.compile(r"in place of|instead of|stands? in for|substitut", re.IGNORECASE)
"""A caption sentence that says what the item shows in place of the document's setting."""


def _source_name(source: str) -> str:
    """'MNIST: IDX files in … (average-pooled 28→14)' -> 'MNIST (average-pooled 28→14)'."""
    pooled = re.search(r" \((average-pooled[^)]*)\)$", source)
    name = source.split(": ")[0].strip()
    return f"{name} ({pooled.group(1)})" if pooled and pooled.group(1) not in name else name


def _sources(data: str) -> list[str]:
    """The sources :func:`figures.base.describe` joined with '; ', split only outside brackets (a source may say
    '[identified by … (…); not the official files]')."""
    parts, depth, start = [], 0, 0
    for k, char in enumerate(data):
        depth += (char in "([{") - (char in ")]}")
        if depth == 0 and data.startswith("; ", k):
            parts.append(data[start:k])
            start = k + 2
    return [*parts, data[start:]]


def drawn_depths(output: FigureOutput) -> list[int]:
    """The depths an item draws: 'depth N' in its figure's texts (titles, tick labels, legends, which name the
    runs plotted) or the values of its table's ``depth`` column."""
    texts = [t.get_text() for t in output.figure.findobj(Text) if t.get_visible()] if output.figure else []
    found = {int(n) for text in texts for n in re.findall(r"\bdepth[ -](\d+)\b", text)}
    if output.table is not None and "depth" in output.table.columns:
        found |= {int(d) for d in output.table["depth"] if str(d).isdigit()}
    return sorted(found)


def shown_here(caption: str, depths: Sequence[int] = ()) -> str:
    """What an item actually shows, read off its caption: data, scale, seeds and epochs of the runs drawn (the
    :func:`~figures.base.describe` clause, data sources cut to their names) and every sentence saying what
    stands in for the document's setting (another depth, dataset, …); 'no data' for a schematic of built
    models; '' when the caption says none of it. ``depths`` (:func:`drawn_depths`) come first when given."""
    parts = [f"depth{'s' if len(depths) > 1 else ''} drawn: {', '.join(map(str, depths))}."] if depths else []
    for match in DESCRIBED.finditer(caption):
        fields = [f"data: {', '.join(dict.fromkeys(_source_name(s) for s in _sources(match['data'])))}"
                  if match["data"] else "", f"scale: {match['scale']}", f"seeds: {match['seeds']}",
                  f"epochs: {match['epochs']}" if match["epochs"] else ""]
        parts.append("; ".join(f for f in fields if f) + ".")
    if not any("data: " in part for part in parts) and re.search(r"\bno data\b", caption, re.IGNORECASE):
        parts.insert(0, "no data (drawn from built models).")
    sentences = re.split(r"(?<=[.!?])\s+(?=[A-Z(])", DESCRIBED.sub("", caption))
    parts += [sentence.strip() for sentence in sentences if STANDS_IN.search(sentence)]
    return " ".join(dict.fromkeys(parts))


def _item_html(
    item_id: str, title: str, claim: str | None, output: FigureOutput | None, out_dir: Path, extra: bool = False,
    failure: str | None = None,
) -> str:
    if extra:
        head = (f"<h3 id='{item_id}'>{html.escape(item_id)} — {html.escape(title)} "
                "<span class='extra'>(extra: not in the document)</span></h3>")
    else:  # the catalogue's title describes the document's item, which may differ from what is drawn here
        head = (f"<h3 id='{item_id}'>{html.escape(item_id)} — <span class='doc'>document:</span> "
                f"{html.escape(title)}</h3>")
    if output is not None and failure is None:
        shown = shown_here(output.caption, drawn_depths(output))
        head += f"<p class='shown'><b>Shown here:</b> {html.escape(shown or 'see the caption below.')}</p>"
    if failure is not None:
        return head + f"<p class='missing'>Not drawn: {html.escape(failure)}</p>"
    if output is None:
        return head + "<p class='missing'>Not implemented yet: no figure is shown for this item.</p>"
    body = []
    for path in output.files:
        relative = html.escape(os.path.relpath(path, out_dir))
        if path.suffix == ".png":  # a click opens the picture at its full size
            body.append(f"<a href='{relative}'><img src='{relative}' alt='{html.escape(item_id)}'></a>")
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
        ".missing{color:#a00}.extra{color:#07a;font-weight:normal}.doc{color:#777;font-weight:normal}"
        ".shown{background:#f3f7fb;padding:4px 8px}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px}"
        "</style></head><body>"
        f"<h1>gradlens figures — scale {html.escape(scale)}</h1>" + "".join(sections) + "</body></html>",
        encoding="utf-8",
    )
    summary_path = out_dir / "summary.md"
    summary_path.write_text("\n".join(summary), encoding="utf-8")
    return index, summary_path
