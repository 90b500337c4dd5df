"""The project's layers, read from its imports with ``ast``: one way, no cycles, one installed name.

Every import counts, also one inside a function (a lazy import hides a cycle from Python, not
from the design). Modules are named as installed: the folders migrate/, stacks/ and playbooks/
are ``residency.migrate``, ``residency.stacks`` and ``residency.playbooks`` (pyproject's
package-dir). The layers, lowest first (README "Layout"):

0. foundation: ``residency.*`` (catalogue, policy, db, audit, directory, connections, ...);
1. engines, side by side: the mover ``residency.migrate``, the deploys ``residency.stacks`` and the
   runbooks and notices ``residency.playbooks`` (DESIGN.md's "engines");
2. orchestration: ``residency.ops`` (requests, worker, notices);
3. the CLI ``residency.cli`` and the development sandbox ``residency.sandbox``, which nothing
   below imports (the CLI hands the sandbox's connections down).
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# folder in the checkout -> installed package name
ROOTS = {"residency": "residency", "migrate": "residency.migrate", "stacks": "residency.stacks", "playbooks": "residency.playbooks"}

KNOWN_CYCLES: list[frozenset[str]] = []

LAYERS = (  # (prefix, layer): the longest matching prefix decides
    ("residency", 0),
    ("residency.migrate", 1),
    ("residency.stacks", 1),
    ("residency.playbooks", 1),
    ("residency.access", 1),
    ("residency.backups", 1),
    ("residency.expiry", 1),  # retention enforcement (issue 14)
    ("residency.ops", 2),
    ("residency.cli", 3),
    ("residency.sandbox", 3),
    ("cli", 4),  # the checkout's entry shim
)


def layer(module: str) -> int:
    best = max((p for p, _ in LAYERS if module == p or module.startswith(p + ".")), key=len)
    return dict(LAYERS)[best]


def module_files() -> dict[str, Path]:
    """module name (as installed) -> file, for cli.py and every .py under the project's folders."""
    mods = {"cli": REPO / "cli.py"}
    for folder, installed in ROOTS.items():
        for path in sorted((REPO / folder).rglob("*.py")):
            parts = list(path.relative_to(REPO / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            mods[".".join([installed, *parts])] = path
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
    assert "residency.cli" in g["cli"]  # from residency.cli import main
    assert "residency.catalogue" in g["residency.cli.core"]  # from residency import catalogue as catalogue_mod
    assert "residency.errors" in g["residency.db"]  # from .errors import ...
    assert "residency.sandbox.core" in g["residency.sandbox"]  # the package's re-exports
    assert "residency.migrate.progress" in g["residency.migrate.plan"]  # imported inside a function
    assert "residency.windows" in g["residency.ops.notify"]  # imported inside a function
    assert all(m == "cli" or m.startswith("residency") for targets in g.values() for m in targets)  # only our own


def test_no_new_import_cycles() -> None:
    g = import_graph()
    found = cycles(g)
    new = [c for c in found if c not in KNOWN_CYCLES]
    assert not new, "import cycles (make one side stop importing the other):\n" + "\n".join(_show(c, g) for c in new)


def test_known_cycles_are_still_real() -> None:
    """When a known cycle is broken, take it off KNOWN_CYCLES so it cannot come back."""
    gone = [c for c in KNOWN_CYCLES if c not in cycles(import_graph())]
    assert not gone, "no longer cycles, remove from KNOWN_CYCLES: " + "; ".join(str(sorted(c)) for c in gone)


def test_imports_run_one_way() -> None:
    """No module imports a layer above its own (the foundation nothing above it, and so on)."""
    g = import_graph()
    up = sorted(f"{a} (layer {layer(a)}) imports {b} (layer {layer(b)})" for a, bs in g.items() for b in bs if layer(b) > layer(a))
    assert not up, "imports that climb a layer:\n" + "\n".join(up)


def test_nothing_in_production_imports_the_sandbox() -> None:
    g = import_graph()
    users = sorted(a for a, bs in g.items() for b in bs
                   if layer(b) == 3 and b.startswith("residency.sandbox") and not a.startswith(("residency.sandbox", "residency.cli", "cli")))
    assert not users, f"the sandbox is a development package; imported by {users}"


def test_the_layers_are_not_empty() -> None:
    """The layer table names real packages (a renamed folder would make the checks above vacuous)."""
    seen = {layer(m) for m in module_files()}
    assert seen == {0, 1, 2, 3, 4}


def test_installed_names_are_all_under_residency(tmp_path: Path) -> None:
    """The wheel puts one import name into site-packages, ``residency`` (no ``cli``, ``migrate``,
    ``stacks`` or ``playbooks`` to clash with other distributions), with the templates and SQL it reads."""
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    assert all(p == "residency" or p.startswith("residency.") for p in declared)
    src = tmp_path / "src"  # a copy: building in the checkout would leave build/ behind in it
    src.mkdir()
    keep = ("pyproject.toml", "README.md", "cli.py", *ROOTS)
    for name in keep:
        (shutil.copytree if (REPO / name).is_dir() else shutil.copy2)(REPO / name, src / name, **(
            {"ignore": shutil.ignore_patterns("__pycache__")} if (REPO / name).is_dir() else {}))
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(src)],
                       capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        pytest.fail(f"building the wheel failed: {r.stderr[-2000:]}")
    (wheel,) = tmp_path.glob("residency-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert top == {"residency"}
    for needed in ("residency/migrate/copy.py", "residency/stacks/Pulumi.yaml", "residency/sandbox/schema.sql",
                   "residency/playbooks/templates/events/notice.txt.j2", "residency/cli/move.py"):
        assert needed in names, f"{needed} missing from the wheel"
