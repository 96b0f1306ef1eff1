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

Run as a script (``python tests/test_imports.py``) to print the import picture: modules, edges, circles and the
largest strongly connected set.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("gradlens", "analyses", "figures")
#: Which rooms each room may not import from (the floors of the house).
FORBIDDEN = {"gradlens": ("analyses", "figures"), "analyses": ("figures",)}


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


# -- the house -------------------------------------------------------------------------------------------------


def test_no_import_circle():
    found = circles(import_graph())
    assert not found, "import circles: " + "; ".join(" -> ".join(circle) for circle in found)


def test_the_floors_hold():
    breaches = floor_breaches(import_graph(type_checking=True))
    assert not breaches, "imports against the floors (gradlens < analyses < figures): " + "; ".join(breaches)


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


if __name__ == "__main__":
    print(picture(False))
    print(picture(True))
    sys.exit(0)
