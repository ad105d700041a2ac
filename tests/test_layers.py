"""Imports follow the layers of kerascompress/_layers.py: only downwards, never sideways, no circles.

Every module under kerascompress/ is parsed; imports inside functions and under
``if TYPE_CHECKING`` count as much as those at the top, since deferring an import
hides a dependency without removing it.
"""
from __future__ import annotations

import ast
import dataclasses
from pathlib import Path
from typing import Iterable

import pytest

from kerascompress._layers import LAYERS, RANK, markdown_table, part_of

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "kerascompress"


@dataclasses.dataclass(frozen=True)
class Import:
    """One import statement of one module: who imports what, and where."""

    module: str  # dotted name of the importing module
    target: str  # dotted name of the imported kerascompress module
    where: str  # path:line, for the message

    def __str__(self) -> str:
        return f"{self.where}: {self.module} imports {self.target}"


def module_name(path: Path, package: Path) -> str:
    rel = path.relative_to(package.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def read_imports(package: Path) -> tuple[set[str], list[Import]]:
    """All modules of ``package`` and every import of one of them, anywhere in a module."""
    paths = sorted(package.rglob("*.py"))
    modules = {module_name(p, package) for p in paths}
    found: list[Import] = []
    for path in paths:
        name = module_name(path, package)
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            where = f"{path.relative_to(package.parent)}:{getattr(node, 'lineno', 0)}"
            for target in _targets(node, name, is_package, modules):
                if target.split(".")[0] == package.name and target != name:
                    found.append(Import(name, target, where))
    return modules, list(dict.fromkeys(found))  # `from x import a, b` of one module counts once


def _targets(node: ast.AST, module: str, is_package: bool, modules: set[str]) -> Iterable[str]:
    if isinstance(node, ast.Import):
        yield from (alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:  # relative: resolve against the importing module's package
            anchor = module.split(".") if is_package else module.split(".")[:-1]
            anchor = anchor[: len(anchor) - (node.level - 1)]
            base = ".".join(anchor + ([base] if base else []))
        for alias in node.names:
            sub = f"{base}.{alias.name}"
            yield sub if sub in modules else base


def layer_violations(imports: Iterable[Import]) -> list[str]:
    """Imports of a higher layer or of a sibling package in the same layer, and parts in no layer."""
    problems = []
    for imp in imports:
        own, other = part_of(imp.module), part_of(imp.target)
        if own == other:
            continue
        unknown = [p for p in (own, other) if p not in RANK]
        if unknown:
            problems.append(f"{imp}: {', '.join(unknown)} is in no layer; add it to LAYERS in kerascompress/_layers.py")
        elif RANK[other] > RANK[own]:
            problems.append(
                f"{imp}: {own} (layer {LAYERS[RANK[own]][0]}) must not import {other} of the higher layer "
                f"{LAYERS[RANK[other]][0]}"
            )
        elif RANK[other] == RANK[own]:
            problems.append(f"{imp}: {own} must not import its sibling {other} (both in layer {LAYERS[RANK[own]][0]})")
    return problems


def import_circles(imports: Iterable[Import]) -> list[list[str]]:
    """Each group of modules that import one another in a circle (strongly connected, Tarjan)."""
    graph: dict[str, set[str]] = {}
    for imp in imports:
        graph.setdefault(imp.module, set()).add(imp.target)
        graph.setdefault(imp.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

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
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                circles.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return circles


# ----------------------------------------------------------------------------- the real package


@pytest.fixture(scope="module")
def package_imports() -> tuple[set[str], list[Import]]:
    return read_imports(PACKAGE)


def test_no_module_imports_a_higher_layer_or_a_sibling(package_imports):
    _, imports = package_imports
    problems = layer_violations(imports)
    assert not problems, "imports against the layers:\n" + "\n".join(problems)


def test_no_import_circles(package_imports):
    _, imports = package_imports
    circles = import_circles(imports)
    details = [" <-> ".join(c) + "\n    " + "\n    ".join(
        str(i) for i in imports if i.module in c and i.target in c) for c in circles]
    assert not circles, "modules importing one another:\n" + "\n".join(details)


def test_every_package_has_a_layer_and_every_layer_entry_exists(package_imports):
    modules, _ = package_imports
    parts = {part_of(m) for m in modules}
    assert not parts - set(RANK), f"in no layer (add to kerascompress/_layers.py): {sorted(parts - set(RANK))}"
    assert not set(RANK) - parts, f"layer entries naming nothing: {sorted(set(RANK) - parts)}"


def test_design_doc_shows_the_same_table():
    assert markdown_table() in (ROOT / "docs" / "design.md").read_text(), (
        "docs/design.md must contain the table of kerascompress._layers.markdown_table():\n" + markdown_table()
    )


# ----------------------------------------------------------------------------- the checker itself


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    package = tmp_path / "kerascompress"
    for rel, text in files.items():
        path = package / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return package


def test_the_checker_names_upward_sideways_deferred_and_unknown_imports(tmp_path):
    package = _tree(tmp_path, {
        "__init__.py": "",
        "graph/__init__.py": "",
        "graph/model_graph.py": "def f():\n    from kerascompress.passes import base\n",  # upward, deferred
        "passes/__init__.py": "",
        "passes/base.py": "from kerascompress.graph import model_graph\n",  # downward: fine
        "passes/lowrank.py": "import kerascompress.export.tflite\n",  # sideways
        "export/__init__.py": "",
        "export/tflite.py": "from ..graph.model_graph import f\n",  # relative, downward: fine
        "newpkg/__init__.py": "",
        "newpkg/x.py": "from kerascompress.errors import ConfigError\n",
        "errors.py": "",
    })
    problems = layer_violations(read_imports(package)[1])
    assert len(problems) == 3, problems
    assert problems[0].startswith("kerascompress/graph/model_graph.py:2: kerascompress.graph.model_graph imports "
                                  "kerascompress.passes.base: graph (layer graph) must not import passes")
    assert "kerascompress/passes/lowrank.py:1" in problems[2] and "sibling export" in problems[2]
    assert "newpkg is in no layer" in problems[1]


def test_the_checker_finds_circles_through_functions(tmp_path):
    package = _tree(tmp_path, {
        "__init__.py": "",
        "graph/__init__.py": "",
        "graph/a.py": "from kerascompress.graph import b\n",
        "graph/b.py": "def g():\n    import kerascompress.graph.c\n",
        "graph/c.py": "from kerascompress.graph.a import something\n",
        "graph/d.py": "from kerascompress.graph import a\n",  # into the circle, not part of it
    })
    assert import_circles(read_imports(package)[1]) == [
        ["kerascompress.graph.a", "kerascompress.graph.b", "kerascompress.graph.c"]]
