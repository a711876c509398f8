"""The package's internal import graph, read with ``ast`` (nothing is imported).

Every ``.py`` file under ``src/circuit_breakers`` is parsed and each import of a
``circuit_breakers`` module is collected: absolute and relative, at any depth (module body,
class body, ``try``/``if`` blocks, functions). ``from pkg import name`` counts the submodule
``pkg.name`` when that is a file of the package, else ``pkg`` itself. Implicit parent-package
imports (``import a.b.c`` also runs ``a/__init__`` and ``a/b/__init__``) are not edges.

Each import is one of three kinds:

* module-level: runs when the importing module is imported (module or class body, including
  inside ``try``/``if``, but not under ``if TYPE_CHECKING:``);
* lazy: inside a function or method body, runs when that is called;
* type-checking: under ``if TYPE_CHECKING:``, never runs, so it is in neither graph.

Module-level imports must form no cycle at all, and no import (module-level or lazy) may reach
up a floor of :data:`FLOORS`: each subpackage builds only on the ones below it. Adding the lazy ones, the cycles found must be
exactly :data:`ALLOWED_LAZY_CYCLES`, so a new one fails here (and a removed one asks for the
entry to go).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = "circuit_breakers"
SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE_DIR = SRC / PACKAGE

MODULE_LEVEL, LAZY, TYPE_CHECKING_ONLY = "module", "lazy", "type_checking"

# Cycles that exist only through function-level (lazy) imports, each a chain starting at its
# alphabetically smallest module, with why it is left as is.
ALLOWED_LAZY_CYCLES: dict[str, str] = {}

#: the subpackages by floor; a module imports from its own subpackage or from lower floors only.
#: Modules at the package root (``__init__``: the public API, imported lazily) are above all.
FLOORS: dict[str, int] = {
    "core": 0,  # schema, render, masks, models, files, errors, run-folder layout
    "eval": 1,  # judging, suites, generation, scoring, targets
    "data": 2,
    "training": 2,
    "attack": 2,
    "report": 3,  # reads run folders
    "pipeline": 4,  # cb demo: runs data, training, eval and the report as stages
    "cli": 5,
}


@dataclass(frozen=True)
class Import:
    source: str  # importing module
    target: str  # imported circuit_breakers module
    kind: str  # MODULE_LEVEL, LAZY or TYPE_CHECKING_ONLY
    line: int


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE_DIR.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk(node: ast.AST, kind: str) -> Iterator[tuple[ast.Import | ast.ImportFrom, str]]:
    """Every import statement in ``node``, with the kind of the context it sits in."""
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        yield node, kind
    elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        # import statements can only sit in the body, which runs when the function is called
        inner = LAZY if kind == MODULE_LEVEL else kind
        for stmt in node.body:
            yield from _walk(stmt, inner)
    elif isinstance(node, ast.If) and _is_type_checking(node.test):
        for stmt in node.body:
            yield from _walk(stmt, TYPE_CHECKING_ONLY)
        for stmt in node.orelse:
            yield from _walk(stmt, kind)
    else:
        for child in ast.iter_child_nodes(node):
            yield from _walk(child, kind)


def _resolve_relative(source: str, is_package: bool, level: int, module: str | None) -> str:
    base = source.split(".")
    if not is_package:
        base = base[:-1]
    if level > 1:
        base = base[: -(level - 1)]
    assert base, f"relative import beyond the top package in {source}"
    return ".".join(base + ([module] if module else []))


def _known(name: str, modules: dict[str, Path]) -> str:
    """``name`` itself, or its longest prefix that is a module of the package."""
    parts = name.split(".")
    while parts and ".".join(parts) not in modules:
        parts.pop()
    assert parts, name
    return ".".join(parts)


def imports_of(source: str, path: Path, modules: dict[str, Path]) -> list[Import]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    found: list[Import] = []
    for node, kind in _walk(tree, MODULE_LEVEL):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            if node.level:
                base = _resolve_relative(source, is_package, node.level, node.module)
            else:
                base = node.module or ""
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                targets.append(sub if sub in modules else base)
        for target in targets:
            if target == PACKAGE or target.startswith(PACKAGE + "."):
                found.append(Import(source, _known(target, modules), kind, node.lineno))
    return found


def all_imports() -> list[Import]:
    modules = all_modules()
    return [imp for name, path in modules.items() for imp in imports_of(name, path, modules)]


def graph(imports: Iterable[Import], kinds: set[str]) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for imp in imports:
        if imp.kind in kinds and imp.target != imp.source:
            edges.setdefault(imp.source, set()).add(imp.target)
    return edges


def find_cycles(edges: dict[str, set[str]]) -> set[str]:
    """Every elementary cycle, as ``a -> b -> a`` starting at its smallest module."""
    cycles: set[str] = set()
    nodes = sorted(set(edges) | {t for ts in edges.values() for t in ts})
    for start in nodes:
        # cycles whose smallest node is ``start``: search only through nodes >= start
        stack: list[tuple[str, list[str]]] = [(start, [start])]
        while stack:
            node, path = stack.pop()
            for nxt in sorted(edges.get(node, ())):
                if nxt == start:
                    cycles.add(" -> ".join([*path, start]))
                elif nxt > start and nxt not in path:
                    stack.append((nxt, [*path, nxt]))
    return cycles


def _where(imports: list[Import], cycle: str, kinds: set[str]) -> str:
    chain = cycle.split(" -> ")
    lines = []
    for a, b in zip(chain, chain[1:]):
        hits = sorted(
            {
                (i.line, i.kind)
                for i in imports
                if i.source == a and i.target == b and i.kind in kinds
            }
        )
        lines.append(f"    {a} -> {b}: " + ", ".join(f"line {n} ({k})" for n, k in hits))
    return cycle + "\n" + "\n".join(lines)


@pytest.fixture(scope="module")
def imports() -> list[Import]:
    return all_imports()


def test_parser_sees_the_package(imports: list[Import]) -> None:
    """Guard against a parser that silently finds nothing."""
    modules = all_modules()
    assert "circuit_breakers.eval.judging.text" in modules
    assert "circuit_breakers" in modules
    seen = {(i.source, i.target, i.kind) for i in imports}
    # a package's __init__, module level
    assert (
        "circuit_breakers.eval.judging",
        "circuit_breakers.eval.judging.endpoint",
        MODULE_LEVEL,
    ) in seen
    # ``from circuit_breakers.eval.judging.types import ...`` at module level
    assert (
        "circuit_breakers.eval.judging.endpoint",
        "circuit_breakers.eval.judging.types",
        MODULE_LEVEL,
    ) in seen
    # inside a function
    assert ("circuit_breakers.data.build", "circuit_breakers.eval.generate", LAZY) in seen
    # ``from circuit_breakers import __version__`` counts the package itself
    assert ("circuit_breakers.pipeline.demo", "circuit_breakers", MODULE_LEVEL) in seen


def test_resolution_rules() -> None:
    modules = {
        "circuit_breakers": Path("__init__.py"),
        "circuit_breakers.pkg": Path("pkg/__init__.py"),
        "circuit_breakers.pkg.sub": Path("pkg/sub.py"),
        "circuit_breakers.other": Path("other.py"),
    }
    assert _resolve_relative("circuit_breakers.pkg.sub", False, 1, None) == "circuit_breakers.pkg"
    assert _resolve_relative("circuit_breakers.pkg.sub", False, 2, "other") == (
        "circuit_breakers.other"
    )
    assert _resolve_relative("circuit_breakers.pkg", True, 1, "sub") == "circuit_breakers.pkg.sub"
    assert _known("circuit_breakers.pkg.sub", modules) == "circuit_breakers.pkg.sub"
    assert _known("circuit_breakers.pkg.missing", modules) == "circuit_breakers.pkg"
    code = (
        "from typing import TYPE_CHECKING\n"
        "from . import sub, thing\n"
        "import circuit_breakers.other as o\n"
        "if TYPE_CHECKING:\n"
        "    from circuit_breakers.other import X\n"
        "else:\n"
        "    pass\n"
        "class C:\n"
        "    from .sub import y\n"
        "    def m(self):\n"
        "        from ..other import z\n"
    )
    tree = ast.parse(code)
    got = [(type(n).__name__, n.lineno, k) for n, k in _walk(tree, MODULE_LEVEL)]
    assert got == [
        ("ImportFrom", 1, MODULE_LEVEL),
        ("ImportFrom", 2, MODULE_LEVEL),
        ("Import", 3, MODULE_LEVEL),
        ("ImportFrom", 5, TYPE_CHECKING_ONLY),
        ("ImportFrom", 9, MODULE_LEVEL),
        ("ImportFrom", 11, LAZY),
    ]
    assert find_cycles({"a": {"b"}, "b": {"a", "c"}, "c": {"b"}}) == {"a -> b -> a", "b -> c -> b"}
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == {"a -> b -> c -> a"}
    assert find_cycles({"a": {"b"}, "b": {"c"}}) == set()


def test_no_module_level_import_cycles(imports: list[Import]) -> None:
    kinds = {MODULE_LEVEL}
    cycles = find_cycles(graph(imports, kinds))
    assert not cycles, "module-level import cycles:\n" + "\n".join(
        _where(imports, c, kinds) for c in sorted(cycles)
    )


def test_lazy_import_cycles_are_the_allowed_ones(imports: list[Import]) -> None:
    kinds = {MODULE_LEVEL, LAZY}
    cycles = find_cycles(graph(imports, kinds))
    new = cycles - set(ALLOWED_LAZY_CYCLES)
    gone = set(ALLOWED_LAZY_CYCLES) - cycles
    assert not new, "new import cycles (counting function-level imports):\n" + "\n".join(
        _where(imports, c, kinds) for c in sorted(new)
    )
    assert not gone, "cycles no longer present; drop them from ALLOWED_LAZY_CYCLES:\n" + (
        "\n".join(sorted(gone))
    )


def floor_of(module: str) -> int | None:
    parts = module.split(".")
    return FLOORS.get(parts[1]) if len(parts) > 1 else None


def test_every_subpackage_has_a_floor() -> None:
    subpackages = {p.parent.name for p in PACKAGE_DIR.glob("*/__init__.py")} | {
        p.stem for p in PACKAGE_DIR.glob("*.py") if p.stem not in {"__init__", "__main__"}
    }
    assert subpackages == set(FLOORS), "give each subpackage a floor in FLOORS"


def test_no_import_reaches_up_a_floor(imports: list[Import]) -> None:
    bad = []
    for imp in imports:
        if imp.kind == TYPE_CHECKING_ONLY:
            continue
        src, dst = floor_of(imp.source), floor_of(imp.target)
        if src is None or dst is None or imp.source.split(".")[1] == imp.target.split(".")[1]:
            continue
        if dst >= src:
            bad.append(f"{imp.source} (floor {src}) -> {imp.target} (floor {dst}), line {imp.line}")
    assert not bad, "imports from the same or a higher floor:\n" + "\n".join(sorted(bad))


def test_floor_rule_catches_an_upward_import() -> None:
    assert floor_of("circuit_breakers.core.schema") == 0
    assert floor_of("circuit_breakers.cli.train") == 5
    assert floor_of("circuit_breakers") is None


def test_tests_and_benchmarks_do_not_import_each_other() -> None:
    """Both import only the package: a helper both need belongs in ``circuit_breakers``."""
    root = SRC.parent
    reach = {
        "tests": re.compile(r"sys\.path\.\w+\(.*benchmarks|^\s*(from|import) benchmarks\b"),
        "benchmarks": re.compile(r"sys\.path\.\w+\(.*tests|^\s*(from|import) (tests|kit)\b"),
    }
    bad = [
        f"{path.relative_to(root)}:{n}: {line.strip()}"
        for folder, pattern in reach.items()
        for path in sorted((root / folder).rglob("*.py"))
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if pattern.search(line)
    ]
    assert not bad, "\n".join(bad)
