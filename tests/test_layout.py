"""The package's shape: no import cycles between modules, no module over 600 lines (sid's code rules)."""

from __future__ import annotations

import ast
from pathlib import Path

SID = Path(__file__).resolve().parent.parent / "sid"
MAX_LINES = 600
# the Typer registration pattern: sid.cli defines `app`, imports its command modules last, and each
# command module imports `app` from sid.cli to register on it
REGISTRATION = {"sid.cli"} | {f"sid.cli.{p.stem}" for p in (SID / "cli").glob("*.py") if p.stem != "__init__"}


def modules() -> dict[str, Path]:
    found = {}
    for path in SID.rglob("*.py"):
        parts = path.relative_to(SID.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the sid modules it imports anywhere (top level, inside functions, under TYPE_CHECKING)."""
    mods = modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for module, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                targets = [f"{node.module}.{a.name}" for a in node.names]
                graph[module] |= {t if t in mods else node.module for t in targets} & set(mods)
            elif isinstance(node, ast.Import):
                graph[module] |= {a.name for a in node.names} & set(mods)
        graph[module].discard(module)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles_but_the_cli_registration() -> None:
    graph = import_graph()
    assert "sid.adapters" in graph["sid.pipelines"]  # an import inside a function counts too
    assert [c for c in cycles(graph) if c != REGISTRATION] == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]


def test_no_module_over_600_lines() -> None:
    sizes = {m: len(p.read_text(encoding="utf-8").splitlines()) for m, p in modules().items()}
    assert {m: n for m, n in sizes.items() if n > MAX_LINES} == {}
