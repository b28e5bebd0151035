"""Every third-party package src/reconad imports is declared in pyproject.toml.

A module-level import needs a core dependency (``[project] dependencies``): ``import reconad``
and its modules must work after a plain ``pip install reconad``. An import that runs only when
an optional feature is used (inside a function, under ``if TYPE_CHECKING:``, or in a ``try``
that handles ``ImportError``) may come from an extra (``[project.optional-dependencies]``).
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "reconad"


@dataclass(frozen=True)
class Import:
    module: str
    """Top-level module name, e.g. ``sklearn`` for ``from sklearn.metrics import ...``."""
    where: str
    """``path:line`` of the import."""
    optional: bool
    """Runs only when an optional feature is used (function body, TYPE_CHECKING, try)."""


def _normalise(name: str) -> str:
    """PEP 503 name: ``PyYAML`` and ``pyyaml``, ``scikit_learn`` and ``scikit-learn`` agree."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(spec: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", spec)
    assert match, f"unreadable requirement {spec!r} in pyproject.toml"
    return _normalise(match.group(1))


def declared(pyproject: Path) -> tuple[set[str], dict[str, set[str]]]:
    """(core distribution names, {extra: distribution names}), normalised."""
    project = tomllib.loads(pyproject.read_text())["project"]
    core = {_requirement_name(s) for s in project.get("dependencies", [])}
    extras = {extra: {_requirement_name(s) for s in specs}
              for extra, specs in project.get("optional-dependencies", {}).items()}
    return core, extras


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _handles_import_error(node: ast.Try) -> bool:
    names = {"ImportError", "ModuleNotFoundError", "Exception"}
    for handler in node.handlers:
        kinds = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
        if handler.type is None or any(isinstance(k, ast.Name) and k.id in names for k in kinds):
            return True
    return False


def imports_of(package: Path) -> list[Import]:
    """Every absolute import in the ``.py`` files below ``package``."""
    found: list[Import] = []

    def visit(node: ast.AST, path: Path, optional: bool) -> None:
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module] if node.level == 0 and node.module else [])
            for name in names:
                found.append(Import(name.split(".")[0], f"{path}:{node.lineno}", optional))
            return
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            optional = True
        elif isinstance(node, ast.If) and _is_type_checking(node):
            optional = True
        elif isinstance(node, ast.Try) and _handles_import_error(node):
            optional = True
        for child in ast.iter_child_nodes(node):
            visit(child, path, optional)

    for path in sorted(package.rglob("*.py")):
        visit(ast.parse(path.read_text(), filename=str(path)), path.relative_to(package.parent),
              False)
    return found


def undeclared(package: Path, pyproject: Path) -> list[str]:
    """One line per import that pyproject.toml does not cover (empty when all are declared)."""
    core, extras = declared(pyproject)
    in_extras = set().union(*extras.values()) if extras else set()
    providers = importlib.metadata.packages_distributions()
    own = package.name
    problems = []
    for imp in imports_of(package):
        if imp.module in sys.stdlib_module_names or imp.module == own:
            continue
        dists = {_normalise(d) for d in providers.get(imp.module, [])}
        if not dists:
            problems.append(f"{imp.where}: imports {imp.module}, which no installed "
                            "distribution provides; install it and declare it in pyproject.toml")
        elif not dists & core and not (imp.optional and dists & in_extras):
            where = "[project] dependencies" if not imp.optional else "dependencies or an extra"
            extra = [e for e, names in extras.items() if dists & names]
            hint = (f" (it is in extra {extra[0]!r}: import it inside the function that needs "
                    "it)" if extra else "")
            problems.append(f"{imp.where}: imports {imp.module} from {'/'.join(sorted(dists))}, "
                            f"not declared in {where} of pyproject.toml{hint}")
    return problems


def test_every_import_of_reconad_is_declared():
    problems = undeclared(SRC, ROOT / "pyproject.toml")
    assert not problems, "\n".join(problems)


def test_the_check_finds_what_is_not_declared(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("import os\nimport numpy as np\nfrom pkg import sub\n")
    (package / "sub" / "__init__.py").write_text(
        "import yaml\n"                              # module level, in an extra only
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    import scipy\n"      # type hints only: an extra is enough
        "def plot():\n    import matplotlib\n"       # inside a function: an extra is enough
        "def fetch():\n    import rich.console\n"    # declared nowhere
        "try:\n    import sklearn\nexcept ImportError:\n    sklearn = None\n"
        "import torch\n"                             # declared nowhere, module level
    )
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project]\nname = "pkg"\ndependencies = ["numpy>=1"]\n'
                         '[project.optional-dependencies]\n'
                         'extra = ["PyYAML", "matplotlib", "scipy", "scikit_learn"]\n')
    problems = undeclared(package, pyproject)
    assert [p.split(":")[0] for p in problems] == ["pkg/sub/__init__.py"] * 3
    assert [p.split(": imports ")[1].split()[0] for p in problems] == ["yaml", "rich", "torch"]
    assert "it is in extra 'extra': import it inside the function" in problems[0]
    pyproject.write_text(pyproject.read_text().replace('["numpy>=1"]',
                                                       '["numpy>=1", "rich", "torch==2.13.0"]'))
    assert [p.split(": imports ")[1].split()[0] for p in undeclared(package, pyproject)] == [
        "yaml"]
