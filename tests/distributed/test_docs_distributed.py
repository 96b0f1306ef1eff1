"""Every python example of docs/distributed.md runs: torchrun scripts on 2 gloo processes, the rest in-process."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.distributed.harness import check, exec_script, run_ranks

PAGE = Path(__file__).resolve().parents[2] / "docs" / "distributed.md"


def blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", PAGE.read_text(encoding="utf-8"), flags=re.S)


def test_page_has_every_section():
    text = PAGE.read_text(encoding="utf-8")
    for title in (
        "## DDP",
        "## FSDP2",
        "## When a rank dies",
        "## Mixed precision (AMP)",
        "## Lightning",
        "## Hugging Face Trainer",
    ):
        assert title in text
    assert sum(block.startswith("# torchrun --nproc_per_node=2") for block in blocks()) == 2


def test_examples_run(tmp_path, monkeypatch):
    pytest.importorskip("lightning.pytorch")
    pytest.importorskip("transformers")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "docs_distributed"}
    for number, block in enumerate(blocks(), start=1):
        name = f"distributed.md block {number}"
        if block.startswith("# torchrun --nproc_per_node=2"):
            check(run_ranks(exec_script, 2, block, name, str(tmp_path), group_timeout=None))
        else:
            exec(compile(block, name, "exec"), namespace)
