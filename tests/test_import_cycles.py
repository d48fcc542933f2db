"""No import cycle between the modules of ``prnf_core``, ``tasks`` and ``flows``.

The graph is read statically: every ``import`` statement of a module, at module level *and*
inside functions or ``if`` blocks (``if TYPE_CHECKING:`` included), is an edge: a
function-local import that dodges a cycle at import time is still a cycle in the design.
``from package import name`` is an edge to the submodule ``package.name`` when there is one,
else to ``package`` itself. Importing ``a.b.c`` makes Python run the parent packages first, but
those implicit edges are not counted: a package's ``__init__`` re-exporting its submodules is
not a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("prnf_core", "tasks", "flows")


def module_files(root: Path = ROOT) -> dict[str, Path]:
    """``{"prnf_core.models.base": path, ...}`` for every module of the project's packages."""
    modules = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def imported_modules(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules that the module ``name`` (file ``path``) imports anywhere."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x, from ..a import b
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in modules else base)
    return {target for target in found if target in modules and target != name}


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    modules = module_files(root)
    return {name: imported_modules(name, path, modules) for name, path in modules.items()}


def knots(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan): each module of one
    lies on a cycle through the others."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return components


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per knot, as the modules along it, the first repeated at the end."""
    return [_cycle_in(graph, component) for component in knots(graph)]


def _cycle_in(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """A shortest cycle through the component's first module (breadth-first search)."""
    start = min(component)
    parents: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for v in frontier:
            for w in sorted(graph[v] & component):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(parents[path[-1]])
                    return [*reversed(path), start]
                if w not in parents:
                    parents[w] = v
                    following.append(w)
        frontier = following
    raise AssertionError(f"no cycle through {start}")  # unreachable for a real component


def test_finds_a_function_local_cycle(tmp_path):
    """The walker sees imports inside functions, relative imports and package re-exports."""
    pkg = tmp_path / "prnf_core"
    (pkg / "models").mkdir(parents=True)
    (tmp_path / "tasks").mkdir()
    (tmp_path / "flows").mkdir()
    (pkg / "__init__.py").write_text("from prnf_core.a import x\n")
    (pkg / "a.py").write_text("from prnf_core import __version__\n")
    (pkg / "models" / "__init__.py").write_text("from .base import build\n")
    (pkg / "models" / "base.py").write_text("def build():\n    from .sub import Sub\n")
    (pkg / "models" / "sub.py").write_text("from prnf_core.models.base import build\n")
    (pkg / "b.py").write_text("import prnf_core.models.base\nfrom prnf_core import a\n")
    cycles = find_cycles(import_graph(tmp_path))
    assert sorted(cycles) == [["prnf_core", "prnf_core.a", "prnf_core"],
                              ["prnf_core.models.base", "prnf_core.models.sub",
                               "prnf_core.models.base"]]


def test_no_import_cycles():
    graph = import_graph()
    found = [f"{' -> '.join(_cycle_in(graph, knot))} (knot: {', '.join(sorted(knot))})"
             for knot in knots(graph)]
    assert not found, "import cycles: " + "; ".join(found)
