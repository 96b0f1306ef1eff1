"""The house's import graph: no circle, and the floors hold (gradlens below analyses below figures).

The graph is read from the source with the standard library's ``ast`` (nothing is imported): one node per module
of ``gradlens/``, ``analyses/`` and ``figures/`` (a package is its ``__init__``), one edge per import statement
anywhere in a module (top level or inside a function), naming a module of those packages:

- ``import a.b.c`` and ``from a.b.c import name`` import ``a.b.c``;
- ``from a.b import c`` imports ``a.b.c`` when ``c`` is a submodule, else ``a.b``;
- relative imports (``from . import x``, ``from ..y import z``) are resolved against the importing package.

Imports inside ``if TYPE_CHECKING:`` (``typing.TYPE_CHECKING`` too) do not count towards circles: they never run,
they only feed type checkers. They do count for the floors: ``gradlens`` imports nothing from ``analyses`` or
``figures``, and ``analyses`` nothing from ``figures``, not even for type hints.

Rooms and floors (docs/architecture.md): a room is a top-level module or package of ``gradlens`` (``gradlens.session``
holds every ``gradlens.session.*`` module; the package ``gradlens`` itself, whose public names load lazily, is the room
``gradlens``), or the whole of ``analyses`` or ``figures``. A room's floor is 0 when it imports no other room, else
one more than the highest floor it imports. The table of docs/architecture.md must show every room with its real
floor and the rooms it imports.

Run as a script (``python tests/test_imports.py``) to print the import picture: modules, edges, circles, the
largest strongly connected set, and the rooms with their floors and imports (the rows of the page's table).
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("gradlens", "analyses", "figures")
#: Which rooms each room may not import from (the floors of the house).
FORBIDDEN = {"gradlens": ("analyses", "figures"), "analyses": ("figures",)}
ARCHITECTURE = REPO / "docs" / "architecture.md"


def module_files(root: Path, packages: tuple[str, ...]) -> dict[str, Path]:
    """Dotted module name -> source file, for every ``.py`` file under each package folder of ``root``."""
    modules = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    """``if TYPE_CHECKING:`` or ``if typing.TYPE_CHECKING:``."""
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    return isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"


def _imports(node: ast.AST, type_checking: bool = False):
    """Yield ``(import node, inside TYPE_CHECKING)`` for every import statement below ``node``."""
    if isinstance(node, ast.Import | ast.ImportFrom):
        yield node, type_checking
        return
    if isinstance(node, ast.If) and _is_type_checking(node.test):
        for child in node.body:
            yield from _imports(child, True)
        for child in node.orelse:
            yield from _imports(child, type_checking)
        return
    for child in ast.iter_child_nodes(node):
        yield from _imports(child, type_checking)


def imported_modules(name: str, path: Path, known: set[str]) -> list[tuple[str, bool]]:
    """``(module, inside TYPE_CHECKING)`` for each import of a module in ``known`` by module ``name`` at ``path``."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node, type_checking in _imports(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            targets = [
                f"{source}.{alias.name}" if f"{source}.{alias.name}" in known else source for alias in node.names
            ]
        found += [(target, type_checking) for target in targets if target in known]
    return found


def import_graph(root: Path = REPO, packages: tuple[str, ...] = PACKAGES, type_checking: bool = False):
    """Module -> the set of modules it imports (with ``type_checking``: imports under TYPE_CHECKING as well)."""
    files = module_files(root, packages)
    known = set(files)
    # a package importing a name of its own (``from pkg import x`` in pkg/__init__.py) is no circle: no self-edges
    return {
        name: {target for target, hint in imported_modules(name, path, known) if type_checking or not hint} - {name}
        for name, path in files.items()
    }


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected sets of ``graph``, each sorted (iterative, so deep graphs do not recurse)."""
    index, low, on_stack, stack, sets = {}, {}, set(), [], []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                members = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    members.append(member)
                    if member == node:
                        break
                sets.append(sorted(members))
    return sets


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One circle per strongly connected set that has one: ``[a, b, ..., a]``, a path of imports back to ``a``."""
    found = []
    for members in strongly_connected(graph):
        start = members[0]
        if len(members) == 1 and start not in graph[start]:
            continue
        inside = set(members)
        # breadth-first from start's successors back to start, inside the set: the shortest circle through it
        previous: dict[str, str] = {}
        frontier = [start]
        while frontier and start not in previous:
            following = []
            for node in frontier:
                for child in sorted(graph[node] & inside):
                    if child not in previous:
                        previous[child] = node
                        following.append(child)
            frontier = following
        path = [start]
        node = previous[start]
        while node != start:
            path.append(node)
            node = previous[node]
        found.append([start, *reversed(path[1:]), start])
    return found


def floor_breaches(graph: dict[str, set[str]]) -> list[str]:
    """``"a.x imports b.y"`` for every import from a room that room may not import from."""
    breaches = []
    for module, targets in sorted(graph.items()):
        room = module.split(".")[0]
        for target in sorted(targets):
            if target.split(".")[0] in FORBIDDEN.get(room, ()):
                breaches.append(f"{module} imports {target}")
    return breaches


def room_of(module: str) -> str:
    """The room of a module: ``gradlens.x`` for ``gradlens.x`` and everything below it, ``gradlens`` for the
    package itself, the top package otherwise (``analyses``, ``figures``)."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "gradlens" else parts[0]


def room_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """Room -> the other rooms its modules import."""
    rooms: dict[str, set[str]] = {}
    for module, targets in graph.items():
        room = room_of(module)
        rooms.setdefault(room, set()).update(room_of(target) for target in targets)
    return {room: targets - {room} for room, targets in rooms.items()}


def floors(rooms: dict[str, set[str]]) -> dict[str, int]:
    """Room -> its floor: 0 when it imports no room, else 1 + the highest floor it imports (rooms in a circle
    have no floor: ``ValueError`` naming the circle)."""
    found = circles(rooms)
    if found:
        raise ValueError("rooms in a circle have no floor: " + "; ".join(" -> ".join(c) for c in found))
    floor: dict[str, int] = {}

    def of(room: str) -> int:
        if room not in floor:
            floor[room] = 1 + max(map(of, rooms[room]), default=-1)
        return floor[room]

    for room in sorted(rooms):
        of(room)
    return floor


def room_rows(rooms: dict[str, set[str]]) -> list[tuple[int, str, tuple[str, ...]]]:
    """``(floor, room, rooms it imports)`` per room, by floor then name: the columns the page's table shows."""
    floor = floors(rooms)
    return sorted((floor[room], room, tuple(sorted(rooms[room]))) for room in rooms)


def documented_rows(text: str) -> list[tuple[int, str, tuple[str, ...]]]:
    """The rows of the rooms table of docs/architecture.md: ``| floor | `room` | imports | owns |`` (rooms
    imported in backticks, ``-`` for none)."""
    rows = []
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and cells[0].isdigit() and re.fullmatch(r"`[\w.]+`", cells[1]):
            rows.append((int(cells[0]), cells[1].strip("`"), tuple(sorted(re.findall(r"`([\w.]+)`", cells[2])))))
    return sorted(rows)


def documented_picture(text: str) -> dict[int, set[str]]:
    """Floor -> rooms of the picture of docs/architecture.md: lines ``floor N │ name name ...``, a name being a
    room without its ``gradlens.`` (``session``), or ``gradlens``, ``analyses``, ``figures``."""
    picture: dict[int, set[str]] = {}
    for floor, names in re.findall(r"^floor (\d+) │(.*)$", text, flags=re.M):
        picture[int(floor)] = {
            name if name in ("gradlens", "analyses", "figures") else f"gradlens.{name}" for name in names.split()
        }
    return picture


# -- the walker itself, on a made-up house ---------------------------------------------------------------------


def write_house(root: Path, files: dict[str, str]) -> None:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_the_walker_resolves_absolute_relative_and_submodule_imports(tmp_path):
    write_house(
        tmp_path,
        {
            "pkg/__init__.py": "from pkg.a import thing\n",
            "pkg/a.py": "import os\nimport pkg.sub.c\n\ndef later():\n    from . import b\n",
            "pkg/b.py": "from .sub import c, value\nfrom typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n    import pkg.a\n",
            "pkg/sub/__init__.py": "value = 1\n",
            "pkg/sub/c.py": "from ..a import thing\nimport typing\nif typing.TYPE_CHECKING:\n    from pkg import b\n",
        },
    )
    graph = import_graph(tmp_path, ("pkg",))
    assert graph == {
        "pkg": {"pkg.a"},
        "pkg.a": {"pkg.sub.c", "pkg.b"},  # a function-level import counts
        "pkg.b": {"pkg.sub.c", "pkg.sub"},  # `from .sub import c, value`: the submodule and the package
        "pkg.sub": set(),
        "pkg.sub.c": {"pkg.a"},
    }
    with_hints = import_graph(tmp_path, ("pkg",), type_checking=True)
    assert with_hints["pkg.b"] == {"pkg.sub.c", "pkg.sub", "pkg.a"}
    assert with_hints["pkg.sub.c"] == {"pkg.a", "pkg.b"}


def test_circles_are_found_and_named(tmp_path):
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e"}, "f": {"d"}}
    assert circles(graph) == [["a", "b", "c", "a"], ["e", "e"]]
    assert sorted(map(len, strongly_connected(graph))) == [1, 1, 1, 3]
    write_house(tmp_path, {"p/__init__.py": "", "p/x.py": "from p import y\n", "p/y.py": "import p.x\n"})
    assert circles(import_graph(tmp_path, ("p",))) == [["p.x", "p.y", "p.x"]]


def test_floor_breaches_are_named():
    graph = {"gradlens.a": {"analyses.b"}, "analyses.b": {"gradlens.a", "figures.c"}, "figures.c": {"analyses.b"}}
    assert floor_breaches(graph) == ["analyses.b imports figures.c", "gradlens.a imports analyses.b"]


def test_rooms_get_floors_from_their_imports():
    graph = {
        "gradlens": set(),
        "gradlens.schema": set(),
        "gradlens.loader.run": {"gradlens.schema", "gradlens.loader.rows"},
        "gradlens.loader.rows": {"gradlens.schema"},
        "gradlens.report.page": {"gradlens.loader.run", "gradlens"},
        "analyses.a": {"gradlens.report.page", "analyses.b"},
        "analyses.b": set(),
        "figures.x": {"analyses.b"},
    }
    rooms = room_graph(graph)
    assert rooms == {
        "gradlens": set(),
        "gradlens.schema": set(),
        "gradlens.loader": {"gradlens.schema"},
        "gradlens.report": {"gradlens.loader", "gradlens"},
        "analyses": {"gradlens.report"},
        "figures": {"analyses"},
    }
    assert floors(rooms) == {
        "gradlens": 0, "gradlens.schema": 0, "gradlens.loader": 1, "gradlens.report": 2, "analyses": 3, "figures": 4
    }
    assert room_rows(rooms)[2:4] == [(1, "gradlens.loader", ("gradlens.schema",)), (2, "gradlens.report",
                                                                                    ("gradlens", "gradlens.loader"))]
    with pytest.raises(ValueError, match="rooms in a circle have no floor: a -> b -> a"):
        floors({"a": {"b"}, "b": {"a"}})


def test_the_page_table_is_read_row_by_row():
    page = (
        "| floor | room | imports | owns |\n|---|---|---|---|\n| 0 | `gradlens.schema` | - | the format |\n"
        "| 2 | `gradlens.report` | `gradlens.loader`, `gradlens` | pages |\n| x | `no` | - | not a row |\n"
    )
    assert documented_picture("floor 1 │ loader  layers\nfloor 0 │ schema   gradlens\n") == {
        1: {"gradlens.loader", "gradlens.layers"},
        0: {"gradlens.schema", "gradlens"},
    }
    assert documented_rows(page) == [
        (0, "gradlens.schema", ()), (2, "gradlens.report", ("gradlens", "gradlens.loader"))
    ]


# -- the house -------------------------------------------------------------------------------------------------


def test_no_import_circle():
    found = circles(import_graph())
    assert not found, "import circles: " + "; ".join(" -> ".join(circle) for circle in found)


def test_the_floors_hold():
    breaches = floor_breaches(import_graph(type_checking=True))
    assert not breaches, "imports against the floors (gradlens < analyses < figures): " + "; ".join(breaches)


def test_the_architecture_page_shows_every_room_on_its_real_floor():
    real = room_rows(room_graph(import_graph()))
    shown = documented_rows(ARCHITECTURE.read_text())
    assert shown == real, (
        "docs/architecture.md's table is not the house (update it from `python tests/test_imports.py`): "
        f"not on the page: {sorted(set(real) - set(shown))}; on the page only: {sorted(set(shown) - set(real))}"
    )


def test_the_architecture_page_picture_shows_every_room_on_its_real_floor():
    real: dict[int, set[str]] = {}
    for room, floor in floors(room_graph(import_graph())).items():
        real.setdefault(floor, set()).add(room)
    assert documented_picture(ARCHITECTURE.read_text()) == real


def picture(type_checking: bool) -> str:
    graph = import_graph(type_checking=type_checking)
    largest = max(strongly_connected(graph), key=len)
    found = circles(graph)
    return (
        f"{'with' if type_checking else 'without'} TYPE_CHECKING imports: {len(graph)} modules, "
        f"{sum(map(len, graph.values()))} edges, {len(found)} circles"
        + "".join(f"\n  {' -> '.join(c)}" for c in found)
        + f"\n  largest strongly connected set: {len(largest)} ({', '.join(largest)})"
    )


def rows_text() -> str:
    """The rooms table's first three columns as the page writes them (``owns`` is the page's own prose)."""
    return "\n".join(
        f"| {floor} | `{room}` | {', '.join(f'`{t}`' for t in targets) or '-'} |"
        for floor, room, targets in room_rows(room_graph(import_graph()))
    )


if __name__ == "__main__":
    print(picture(False))
    print(picture(True))
    print(rows_text())
    sys.exit(0)
