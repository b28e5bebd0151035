"""The layout keeps showing the architecture (docs/architecture.md): few top-level modules,
small files, and imports that only run down the floors (no loop, none hidden in a function)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "reconad"
MAX_TOP_LEVEL = 22
MAX_LINES = 450
# Function-level imports of reconad modules allowed only here: the CLI imports each command's
# machinery when that command runs, so `reconad --help` stays fast.
LAZY_IMPORTERS = {"cli.py"}


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _file_of(module: str) -> Path | None:
    base = PACKAGE.parent.joinpath(*module.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _imports(path: Path) -> tuple[set[str], list[int]]:
    """(reconad modules imported at module level, lines of reconad imports inside functions)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top: set[str] = set()
    nested: list[int] = []

    def targets(node: ast.Import | ast.ImportFrom) -> list[str]:
        if isinstance(node, ast.Import):
            return [a.name for a in node.names]
        if node.level or not node.module:
            return []
        # `from reconad import pipeline` names the module reconad.pipeline
        return [f"{node.module}.{a.name}" if _file_of(f"{node.module}.{a.name}") else node.module
                for a in node.names]

    def visit(node: ast.AST, in_function: bool, type_only: bool) -> None:
        if isinstance(node, ast.Import | ast.ImportFrom):
            for name in targets(node):
                if name == "reconad" or name.startswith("reconad."):
                    if in_function and not type_only:
                        nested.append(node.lineno)
                    elif not type_only:
                        top.add(name)
            return
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            in_function = True
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            type_only = True
        for child in ast.iter_child_nodes(node):
            visit(child, in_function, type_only)

    visit(tree, False, False)
    return top, nested


def import_graph() -> dict[str, set[str]]:
    """Module-level imports between reconad's modules (a face counts as its package)."""
    graph = {}
    for path in _modules():
        found, _ = _imports(path)
        graph[_module_name(path)] = {m for m in found if _file_of(m) and m != _module_name(path)}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import loop of ``graph`` as a list of modules, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_top_level_has_at_most_22_modules():
    top = sorted(p.name for p in PACKAGE.iterdir()
                 if p.suffix == ".py" or (p.is_dir() and (p / "__init__.py").is_file()))
    assert len(top) <= MAX_TOP_LEVEL, top


def test_no_module_is_over_450_lines():
    long = {str(p.relative_to(PACKAGE)): n for p in _modules()
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert long == {}


def test_no_import_loop_between_modules():
    assert find_cycle(import_graph()) is None


def test_no_reconad_import_hides_in_a_function():
    hidden = {str(p.relative_to(PACKAGE)): lines for p in _modules()
              if p.name not in LAZY_IMPORTERS and (lines := _imports(p)[1])}
    assert hidden == {}


def test_inside_a_package_modules_import_their_siblings_not_their_face():
    offenders = []
    for path in _modules():
        name = _module_name(path)
        if path.name.startswith("_") and path.name != "__init__.py":
            package = name.rsplit(".", 1)[0]
            if package in _imports(path)[0]:
                offenders.append(name)
    assert offenders == []


def test_the_loop_finder_finds_a_loop():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None
