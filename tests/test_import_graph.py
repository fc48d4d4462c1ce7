"""The import structure of app/ stays a one-way street.

Every package under app/ is a node; an import of anything inside another package is an arrow.
A top-level module (app/runtime.py, app/deps.py, …) is shared ground: importing it counts as
importing the packages it imports, directly or through other top-level modules. The arrows must
not form a loop, and no import of another package may hide inside a function (the usual way to
dodge a loop). Files must not import each other in a circle either. Imports under `if TYPE_CHECKING:` count: a
circle a type checker walks is still a circle for a reader.
"""

from __future__ import annotations

import ast
from pathlib import Path

APP = Path(__file__).resolve().parent.parent / "app"


def _module_name(path: Path) -> str:
    parts = path.relative_to(APP.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(importer: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = importer.split(".")
    base = base[: len(base) - node.level + (1 if is_package else 0)]
    return ".".join([*base, node.module] if node.module else base)


def _imports(path: Path) -> list[tuple[str, bool, int]]:
    """(imported module, inside a function?, line) for every import of an app module in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    importer = _module_name(path)
    is_package = path.name == "__init__.py"
    found: list[tuple[str, bool, int]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            if isinstance(child, ast.Import):
                found.extend((alias.name, inside, child.lineno) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                target = _resolve(importer, is_package, child)
                found.append((target, inside, child.lineno))
                # `from app.rules import engine` imports the module app.rules.engine.
                found.extend((f"{target}.{alias.name}", inside, child.lineno) for alias in child.names)
            visit(child, inside)

    visit(tree, False)
    return [(name, inside, line) for name, inside, line in found if name == "app" or name.startswith("app.")]


def _files() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(APP.rglob("*.py"))}


def _node(module: str) -> str | None:
    """The package (or top-level module) of app/ a module belongs to; None for app itself."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One loop per strongly connected component with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
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
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return out


def _graphs() -> tuple[dict[str, set[str]], dict[str, set[str]], list[str]]:
    files = _files()
    packages = {p.name for p in APP.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    raw: dict[str, set[str]] = {}  # node (package or top-level module) → nodes it imports
    by_file: dict[str, set[str]] = {}
    hidden: list[str] = []
    for module, path in files.items():
        mine = _node(module)
        for target, inside, line in _imports(path):
            if target in files and target != module:
                by_file.setdefault(module, set()).add(target)
            theirs = _node(target)
            if mine is None or theirs is None or theirs == mine or f"app.{theirs}" not in files:
                continue
            raw.setdefault(mine, set()).add(theirs)
            if inside and theirs in packages:
                hidden.append(f"{path.relative_to(APP.parent)}:{line} imports {target} inside a function")

    def through_shared(node: str, seen: set[str]) -> set[str]:
        """The packages a node reaches directly or through top-level modules only."""
        out: set[str] = set()
        for other in raw.get(node, ()):
            if other in packages:
                out.add(other)
            elif other not in seen:
                seen.add(other)
                out |= through_shared(other, seen)
        return out

    by_package = {p: through_shared(p, set()) - {p} for p in packages}
    return by_package, by_file, hidden


def test_the_graph_is_read() -> None:
    """The walk sees the arrows it should (else the checks below would pass on nothing)."""
    by_node, by_file, _ = _graphs()
    assert "mirror" in by_node["calls"] and "rules" in by_node["findings"]
    assert "app.findings.lifecycle" in by_file["app.findings.evaluation"]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_two_packages_of_app_import_each_other() -> None:
    by_node, _, _ = _graphs()
    assert _cycles(by_node) == []


def test_no_two_files_of_app_import_each_other() -> None:
    _, by_file, _ = _graphs()
    assert _cycles(by_file) == []


def test_no_import_of_another_package_hides_in_a_function() -> None:
    _, _, hidden = _graphs()
    assert hidden == []
