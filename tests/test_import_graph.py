"""autotrace's own modules import one another without a circle.

A circle (``a`` imports ``b`` imports ``a``) makes the order in which a module is
first imported decide whether a name exists yet, and lets no module be read or
replaced alone. The graph is read from the source with ``ast``: every ``import``
anywhere in a file counts (module level, inside a function, under
``TYPE_CHECKING``), since a function-level import only hides a circle. Importing
``pkg.sub.mod`` also runs ``pkg/__init__.py`` and ``pkg/sub/__init__.py``, so those
count too, except the importer's own enclosing packages (always imported first).
"""

from __future__ import annotations

import ast
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import autotrace

Edge = tuple[str, str, str]  # importer, imported, "file:line" of the import


def module_files(root: Path, package: str) -> dict[str, Path]:
    """``{dotted name: file}`` for every module of the package at ``root``."""
    found: dict[str, Path] = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join([package, *parts])] = path
    return found


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def import_edges(root: Path, package: str) -> list[Edge]:
    """Every import of one module of the package by another (see module docstring)."""
    modules = module_files(root, package)
    edges: list[Edge] = []
    for importer, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        here = importer if _is_package(path) else importer.rpartition(".")[0]
        own = set(_ancestors(importer))
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = here.split(".")
                    anchor = anchor[:len(anchor) - (node.level - 1)]
                    base = ".".join([*anchor, base] if base else anchor)
                targets = [base]
                targets += [f"{base}.{alias.name}" for alias in node.names
                            if f"{base}.{alias.name}" in modules]
            for target in targets:
                for name in [*_ancestors(target), target]:
                    if name in modules and name != importer and name not in own:
                        where = f"{path.relative_to(root.parent)}:{node.lineno}"
                        edges.append((importer, name, where))
    return edges


def circles(edges: list[Edge]) -> Iterator[list[Edge]]:
    """One shortest circle through each strongly connected group of modules."""
    graph: dict[str, dict[str, str]] = {}
    for importer, imported, where in edges:
        graph.setdefault(importer, {}).setdefault(imported, where)
        graph.setdefault(imported, {})
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def connect(node: str) -> None:  # Tarjan; the package is small enough to recurse
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group: set[str] = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(group)

    for node in sorted(graph):
        if node not in index:
            connect(node)
    for group in groups:
        start = min(group)
        paths: dict[str, list[Edge]] = {start: []}
        frontier = [start]
        while frontier:  # breadth first: the shortest way back to start
            following = []
            for node in frontier:
                for nxt, where in sorted(graph[node].items()):
                    if nxt not in group:
                        continue
                    path = [*paths[node], (node, nxt, where)]
                    if nxt == start:
                        yield path
                        following = []
                        frontier = []
                        break
                    if nxt not in paths:
                        paths[nxt] = path
                        following.append(nxt)
                else:
                    continue
                break
            frontier = following


def describe(circle: list[Edge]) -> str:
    return " -> ".join([circle[0][0]] + [f"{imported} ({where})"
                                         for _, imported, where in circle])


def test_autotrace_has_no_import_circle() -> None:
    root = Path(autotrace.__file__).parent
    found = [describe(c) for c in circles(import_edges(root, "autotrace"))]
    assert not found, "import circles among autotrace's modules:\n" + "\n".join(found)


#: The floors of the house, top first: a module imports only from floors below its own
#: (or inside its own part). Data flows one way: the command and ``install()`` wire
#: the backends, which see modules through loading, ask selection which functions
#: count, and tell record of each call, which has describe say what a span holds.
FLOORS: list[tuple[str, ...]] = [
    ("autotrace.__main__",),
    ("autotrace", "autotrace.zerocode"),
    ("autotrace.core",),
    ("autotrace.backends",),
    ("autotrace.loading",),
    ("autotrace.selection", "autotrace.record"),
    ("autotrace.config",),
    ("autotrace.configfile",),
    ("autotrace.describe",),
    ("autotrace.errors", "autotrace._log", "autotrace._version"),
]


def _part(module: str) -> tuple[int, str]:
    """The floor and the part (the longest name of ``FLOORS`` that holds ``module``)."""
    best: tuple[int, str] | None = None
    for floor, parts in enumerate(FLOORS):
        for part in parts:
            holds = module == part or (part != "autotrace" and module.startswith(part + "."))
            if holds and (best is None or len(part) > len(best[1])):
                best = (floor, part)
    assert best is not None, f"{module} stands on no floor of FLOORS: add it"
    return best


def test_imports_only_run_down() -> None:
    root = Path(autotrace.__file__).parent
    wrong = []
    for importer, imported, where in import_edges(root, "autotrace"):
        (floor, part), (other_floor, other_part) = _part(importer), _part(imported)
        if part != other_part and floor >= other_floor:
            wrong.append(f"{importer} -> {imported} ({where})")
    assert not wrong, "imports that do not run down the floors:\n" + "\n".join(wrong)


def test_the_graph_sees_autotrace_imports() -> None:
    """The reader finds imports at all: relative, absolute, and inside functions."""
    root = Path(autotrace.__file__).parent
    edges = {(a, b) for a, b, _ in import_edges(root, "autotrace")}
    assert ("autotrace", "autotrace.core") in edges
    assert ("autotrace.core", "autotrace.selection") in edges


@pytest.mark.parametrize("kind", ["module level", "in a function", "type checking",
                                  "through a package"])
def test_a_circle_is_found_and_named(tmp_path: Path, kind: str) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "inner").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "inner" / "__init__.py").write_text("from .c import C\n")
    (pkg / "inner" / "c.py").write_text("from ..a import A\nC = A\n")
    a_imports = {
        "module level": "from .b import B\n",
        "in a function": "def f():\n    from pkg.b import B\n    return B\n",
        "type checking": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                         "    from . import b\n",
        "through a package": "from .inner import C as B\n",
    }[kind]
    (pkg / "a.py").write_text(a_imports + "A = 1\n")
    (pkg / "b.py").write_text(textwrap.dedent("""\
        from .a import A
        B = A
    """))
    found = [describe(c) for c in circles(import_edges(pkg, "pkg"))]
    assert len(found) == 1, found
    assert found[0].startswith("pkg.a -> ")
    assert found[0].endswith("-> pkg.a (pkg/b.py:1)") or found[0].endswith(
        "-> pkg.a (pkg/inner/c.py:1)")


def test_no_circle_without_one(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from .a import A\n")
    (pkg / "a.py").write_text("from .b import B\nA = B\n")
    (pkg / "b.py").write_text("import os\nB = os.sep\n")
    assert list(circles(import_edges(pkg, "pkg"))) == []
