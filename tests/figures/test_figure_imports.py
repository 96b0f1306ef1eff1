"""Figure items share code through their document's common module, never through each other (issue 22.3).

Every module of ``figures/`` is one of:

- an **item** (a catalogue ID, ``figures/<id>.py``): may import from ``figures/`` only the shared
  infrastructure (:data:`SHARED`) and its own document's common module ``figures/<prefix>_common.py``
  (``sc_fig4`` → ``sc_common``); outside ``figures/`` anything (the library ``gradlens``, ``analyses`` for
  presets and file layouts, third-party packages);
- a document's **common module** ``<prefix>_common``: what two or more of that document's items read; may
  import only :data:`SHARED` from ``figures/``, so no item's change reaches another item through it;
- **shared infrastructure** (:data:`SHARED`): what items of several documents use (``base``: inputs,
  captions, saving and readers of recorded runs; ``schematic_layout``: fitting schematics into a figure);
  imports no item and no common module;
- a **driver** (:data:`DRIVERS`): the catalogue, the command line and the gallery, which load items by ID
  (``importlib``) and are imported by no item.

The test walks each module's imports with ``ast`` (imports inside functions included) and fails naming every
import that breaks the rule, by file and line.
"""

from __future__ import annotations

import ast
from pathlib import Path

import figures
from figures.catalogue import EXTRA_ITEMS, ITEMS

FIGURES = Path(figures.__file__).parent
SHARED = frozenset({"base", "schematic_layout"})
DRIVERS = frozenset({"__init__", "__main__", "catalogue", "cli", "gallery"})
ITEM_PREFIXES = {item.id.replace("-", "_"): item.id.split("-")[0] for item in (*ITEMS, *EXTRA_ITEMS)}


def figures_imports(source: str) -> list[tuple[int, str]]:
    """``(line, module)`` of every module of the ``figures`` package that ``source`` imports, by its name inside
    the package (``from figures.yt_tab1 import x`` → ``yt_tab1``; ``from figures import base`` → ``base``;
    relative imports count as ``figures`` ones)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[1]) for alias in node.names
                      if alias.name.startswith("figures.")]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level == 0 and module != "figures" and not module.startswith("figures."):
                continue
            inside = module.split(".")[1] if module.startswith("figures.") else "" if node.level == 0 else module
            if inside:
                found.append((node.lineno, inside.split(".")[0]))
            else:  # ``from figures import base`` / ``from . import base``: the names are the modules
                found += [(node.lineno, alias.name) for alias in node.names]
    return sorted(found)


def role(module: str) -> str:
    """'item', 'common', 'shared' or 'driver'; an error naming the module when it is none of them."""
    if module in ITEM_PREFIXES:
        return "item"
    if module.endswith("_common") and module.removesuffix("_common") in set(ITEM_PREFIXES.values()):
        return "common"
    if module in SHARED:
        return "shared"
    if module in DRIVERS:
        return "driver"
    raise AssertionError(
        f"figures/{module}.py is neither an item of figures/catalogue.py, a <document prefix>_common module, "
        f"shared infrastructure {sorted(SHARED)} nor a driver {sorted(DRIVERS)}: rename it, or add it to SHARED "
        "in tests/figures/test_imports.py if items of several documents use it"
    )


def allowed_imports(module: str) -> frozenset[str]:
    """The ``figures`` modules that ``module`` may import."""
    kind = role(module)
    if kind == "item":
        return SHARED | {f"{ITEM_PREFIXES[module]}_common"}
    if kind in ("common", "shared"):
        return SHARED
    return SHARED | DRIVERS


def violations(module: str, source: str) -> list[str]:
    """One line per import in ``source`` (the text of ``figures/<module>.py``) that breaks the rule."""
    allowed = allowed_imports(module)
    return [
        f"figures/{module}.py:{line} imports figures.{imported} ({role(imported)}); a {role(module)} may import "
        f"only {', '.join(f'figures.{name}' for name in sorted(allowed))}: move what two items share into "
        f"their document's <prefix>_common.py"
        for line, imported in figures_imports(source)
        if imported != module and imported not in allowed
    ]


def test_items_import_only_shared_infrastructure_and_their_documents_common_module():
    found = [line for path in sorted(FIGURES.glob("*.py")) for line in violations(path.stem, path.read_text("utf-8"))]
    assert not found, "\n".join(found)


def test_every_figures_module_has_a_role():
    assert {role(path.stem) for path in FIGURES.glob("*.py")} == {"item", "common", "shared", "driver"}


def test_the_check_names_each_kind_of_forbidden_import():
    source = (
        "from figures.base import save_figure\n"
        "from figures.yt_common import seed_runs\n"
        "from figures.yt_tab1 import summary_rows\n"
        "from figures import yt_tab3\n"
        "import figures.sc_common\n"
        "from .van_fig2 import draw_preact\n"
        "from analyses.runner import preset\n"
        "def later():\n"
        "    from figures.cli import main\n"
    )
    assert figures_imports(source) == [
        (1, "base"), (2, "yt_common"), (3, "yt_tab1"), (4, "yt_tab3"), (5, "sc_common"), (6, "van_fig2"), (9, "cli"),
    ]
    found = violations("yt_fig7", source)
    assert [line.split(" imports ")[0] for line in found] == ["figures/yt_fig7.py:3", "figures/yt_fig7.py:4",
                                                              "figures/yt_fig7.py:5", "figures/yt_fig7.py:6",
                                                              "figures/yt_fig7.py:9"]
    assert "imports figures.yt_tab1 (item)" in found[0]
    assert violations("yt_common", "from figures.yt_tab1 import summary_rows\n")  # a common module imports no item
    assert not violations("yt_common", "from figures.base import config\n")
