"""The catalogue is exactly shared/FIGURES.md, and --list prints it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from figures.catalogue import EXTRA_ITEMS, ITEMS
from figures.cli import list_items, select

FIGURES_MD = Path(__file__).resolve().parents[3] / "shared" / "FIGURES.md"


def test_catalogue_matches_figures_md():
    if not FIGURES_MD.exists():
        pytest.skip(f"{FIGURES_MD} is not beside the repository")
    ids = re.findall(r"^\| ((?:sc|sk|van|yw|yt)-[a-z0-9-]+) \|", FIGURES_MD.read_text(), flags=re.M)
    assert [item.id for item in ITEMS] == ids


def test_list_prints_every_id_once_marking_missing():
    lines = list_items()
    assert [line.split()[0] for line in lines] == [item.id for item in ITEMS]
    assert "yt-fig13" in lines  # implemented: printed bare
    assert all(line.endswith("(not implemented)") or len(line.split()) == 1 for line in lines)


def test_only_rejects_unknown_ids():
    with pytest.raises(KeyError, match="unknown figure ID or document prefix 'yt-fig99'"):
        select(["yt-fig99"])


def test_only_takes_document_prefixes():
    known = [item.id for item in (*ITEMS, *EXTRA_ITEMS)]
    assert list(select(["yt"])) == [i for i in known if i.startswith("yt-")]
    assert list(select(["van", "van-fig1"])) == [i for i in known if i.startswith("van-")]  # no repeats
    assert "yw-extra-gradflow" in select(["yw"]) and len(select(["yt", "sc"])) == 17 + 11
