"""The import graph of dpdb's modules has no cycle (docs/architecture.md, "Layout").

Every import counts, at module level or inside a function, except those under
``if TYPE_CHECKING:`` (annotations only). ``etl/`` and ``processing/`` are the
subpackages ``dpdb.etl`` and ``dpdb.processing``; a package's ``__init__`` that
only re-exports its own modules is a node like any other.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"dpdb": ROOT / "dpdb", "dpdb.etl": ROOT / "etl", "dpdb.processing": ROOT / "processing"}


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            rel = path.relative_to(folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            name = ".".join([package, *parts])
            if package == "dpdb" and parts and parts[0] in ("etl", "processing"):
                continue
            found[name] = path
    return found


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    tree = ast.parse(path.read_text())
    is_package = path.name == "__init__.py"
    out: set[str] = set()

    def target(module: str, names: list[str]) -> None:
        for n in names:
            if f"{module}.{n}" in modules:
                out.add(f"{module}.{n}")
                continue
            if module in modules:
                out.add(module)

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for sub in child.orelse:
                    visit(sub)
                continue
            if isinstance(child, ast.Import):
                for alias in child.names:
                    if alias.name in modules:
                        out.add(alias.name)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = name.split(".") if is_package else name.split(".")[:-1]
                    base = base[: len(base) - (child.level - 1)]
                    module = ".".join(base + ([child.module] if child.module else []))
                else:
                    module = child.module or ""
                target(module, [a.name for a in child.names])
            visit(child)

    visit(tree)
    out.discard(name)
    return out


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    result: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                result.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return result


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def test_the_graph_sees_imports() -> None:
    graph = import_graph()
    assert "dpdb.config" in graph["dpdb.archive"]
    assert "dpdb.cli.root" in graph["dpdb.cli"]
    assert "dpdb.etl.load" in graph["dpdb.archive"]  # inside a method


def test_no_import_cycles() -> None:
    cycles = _cycles(import_graph())
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_cycles_of_the_first_round_are_gone() -> None:
    graph = import_graph()
    assert "dpdb.processing.linkage" not in graph["dpdb.processing.survey"] or (
        "dpdb.processing.survey" not in graph["dpdb.processing.linkage"]
    )
    commands = [m for m in graph if m.startswith("dpdb.cli.") and m != "dpdb.cli.root"]
    assert not any("dpdb.cli.root" in graph[m] for m in commands)  # no command module imports the root
