"""Import cycles between the project's own modules, found by reading their imports with ``ast``.

Every import counts, also one inside a function (a lazy import hides a cycle from Python, not
from the design). A cycle is reported as the set of modules that import each other round.
DESIGN.md wants none; the ones that exist today are listed in KNOWN_CYCLES, so a new cycle, or
a module joining a known one, fails here, and a cycle that is gone must leave the list.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ROOTS = ("residency", "migrate", "stacks", "playbooks")

# Known violations, to be removed by issue 17's re-layering (foundation, mover, orchestration,
# CLI; the sandbox a development package). Each entry is one cycle's set of modules.
KNOWN_CYCLES: list[frozenset[str]] = [
    # issue 17: the mover's strategies and the online mover import each other
    frozenset({"migrate.online", "migrate.strategy"}),
    # issue 17: notices render playbooks; requests and the worker send notices; playbooks read requests
    frozenset({"playbooks", "residency.notify", "residency.requests", "residency.worker"}),
    # issue 17: connections.resolve() asks the sandbox, which builds Connections
    frozenset({"residency.connections", "residency.sandbox", "residency.sandbox.core"}),
]


def module_files() -> dict[str, Path]:
    """module name -> file, for cli.py and every .py under the project's packages."""
    mods = {"cli": REPO / "cli.py"}
    for root in ROOTS:
        for path in sorted((REPO / root).rglob("*.py")):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            mods[".".join(parts)] = path
    return mods


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules that module ``name`` imports, anywhere in its file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def closest(dotted: str) -> str | None:  # the module itself, or the package it lives in
        while dotted and dotted not in known:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(filter(None, (closest(a.name) for a in node.names)))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:  # `from pkg import submodule` imports the submodule
                sub = f"{base}.{alias.name}"
                target = sub if sub in known else closest(base)
                if target:
                    found.add(target)
    found.discard(name)
    return found


def import_graph() -> dict[str, set[str]]:
    files = module_files()
    known = set(files)
    return {name: imports_of(name, path, known) for name, path in files.items()}


def cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[frozenset[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(frozenset(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _show(cycle: frozenset[str], graph: dict[str, set[str]]) -> str:
    edges = sorted(f"{a} -> {b}" for a in cycle for b in graph[a] if b in cycle)
    return "{" + ", ".join(sorted(cycle)) + "}: " + "; ".join(edges)


def test_the_graph_sees_the_imports_it_should() -> None:
    """The reader itself: absolute, relative, `from pkg import module` and lazy imports."""
    g = import_graph()
    assert "residency.catalogue" in g["cli"]  # from residency import catalogue as catalogue_mod
    assert "residency.errors" in g["residency.db"]  # from .errors import ...
    assert "residency.sandbox.core" in g["residency.sandbox"]  # the package's re-exports
    assert "migrate.progress" in g["migrate.plan"]  # imported inside a function
    assert all(m.split(".")[0] in (*ROOTS, "cli") for targets in g.values() for m in targets)  # only our own


def test_no_new_import_cycles() -> None:
    g = import_graph()
    found = cycles(g)
    new = [c for c in found if c not in KNOWN_CYCLES]
    assert not new, "import cycles (make one side stop importing the other):\n" + "\n".join(_show(c, g) for c in new)


def test_known_cycles_are_still_real() -> None:
    """When a known cycle is broken, take it off KNOWN_CYCLES so it cannot come back."""
    gone = [c for c in KNOWN_CYCLES if c not in cycles(import_graph())]
    assert not gone, "no longer cycles, remove from KNOWN_CYCLES: " + "; ".join(str(sorted(c)) for c in gone)
