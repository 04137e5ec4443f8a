"""The package's layering: no import cycles, and nothing imports upward.

Every import counts: at module level, inside functions, under ``TYPE_CHECKING`` and the
targets of lazy re-export tables (``_EXPORTS`` / ``_LAZY``). The layers, lowest first,
are what ``docs/design.md`` shows; a module may import its own package and packages of
lower layers only. The root ``sipflow/__init__.py`` is the public facade above all.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

import sipflow

ROOT = Path(sipflow.__file__).parent

#: lowest first; a package imports only packages of lower layers (and itself)
LAYERS: list[tuple[str, ...]] = [
    ("errors", "_version", "_lazy", "_system", "_warm_client"),
    ("_resources", "schema"),
    ("contracts",),
    ("hookspecs", "stage"),
    ("templates",),
    ("physics", "optim", "beamlines"),
    ("symmetry", "simulate", "priors", "preprocess"),
    ("runset",),
    ("reconstruct", "refine", "analyse", "bragg", "io"),
    ("dip", "learned"),
    ("plugins",),  # above science code: it gets the registry passed, never fetches it
    ("pipeline", "report"),
    ("_api", "_watch"),
    ("orchestration", "viewer", "testing"),
    ("cli",),
]
LAYER_OF = {name: i for i, names in enumerate(LAYERS) for name in names}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(module: str, is_package: bool, level: int, target: str | None) -> str:
    if not level:
        return target or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def import_graph() -> dict[str, set[str]]:
    """Every sipflow module and the sipflow modules it imports (all kinds of import)."""
    files = {_module_name(p): p for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        is_package = path.name == "__init__.py"
        tree = ast.parse(path.read_text(), str(path))
        targets: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(module, is_package, node.level, node.module)
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    targets.add(sub if sub in files else base)
            elif (isinstance(node, ast.Assign) and len(node.targets) == 1
                  and getattr(node.targets[0], "id", "") in ("_EXPORTS", "_LAZY")
                  and isinstance(node.value, ast.Dict)):
                for value in node.value.values:  # {"name": ".module"} or ("..mod", "attr")
                    rel = value.elts[0] if isinstance(value, ast.Tuple) else value
                    if isinstance(rel, ast.Constant) and isinstance(rel.value, str):
                        dots = len(rel.value) - len(rel.value.lstrip("."))
                        targets.add(_resolve(module, is_package, dots,
                                             rel.value.lstrip(".") or None))
        graph[module] = {t for t in targets if t in files and t != module}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def _package(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None  # None: the root facade


def test_no_import_cycles():
    assert _cycles(import_graph()) == []


def test_every_package_has_a_layer():
    packages = {_package(m) for m in import_graph()} - {None}
    assert packages - set(LAYER_OF) == set(), "add new packages to LAYERS (and design.md)"


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """``module -> target`` for every import of the root facade or of a package not below."""
    upward = []
    for module, targets in sorted(graph.items()):
        src = _package(module)
        if src is None:
            continue
        for target in sorted(targets):
            dst = _package(target)
            if dst is None:
                upward.append(f"{module} -> sipflow (the root facade)")
            elif dst != src and LAYER_OF[dst] >= LAYER_OF[src]:
                upward.append(f"{module} -> {target}")
    return upward


def test_nothing_imports_upward():
    assert upward_imports(import_graph()) == []


@pytest.mark.parametrize("code, expected", [
    ("from ..plugins import get_registry\n", {"sipflow.plugins"}),
    ("def f():\n    from ..plugins import get_registry\n", {"sipflow.plugins"}),
    ("if TYPE_CHECKING:\n    from .. import plugins\n", {"sipflow.plugins"}),
    ("_EXPORTS = {'x': '..plugins'}\n", {"sipflow.plugins"}),
    ("from .. import __version__\n", {"sipflow"}),
    ("from .. import schema\n", {"sipflow.schema"}),
])
def test_the_checker_sees_every_kind_of_import(tmp_path, monkeypatch, code, expected):
    """The checker itself can fail: it finds imports inside functions and lazy tables."""
    pkg = tmp_path / "sipflow"
    (pkg / "physics").mkdir(parents=True)
    for name in ("__init__.py", "plugins.py", "schema.py", "errors.py", "physics/__init__.py"):
        (pkg / name).write_text("")
    (pkg / "physics" / "_x.py").write_text(code)
    monkeypatch.setattr(sys.modules[__name__], "ROOT", pkg)
    graph = import_graph()
    assert graph["sipflow.physics._x"] == expected
    flagged = upward_imports(graph)
    assert bool(flagged) == (expected != {"sipflow.schema"}), flagged  # schema is below


#: functions allowed past the limit: a declarative table and the solver's algorithms
LONG_ALLOWED = {"sipflow.cli._parser.build_parser", "sipflow.optim._solver.solve",
                "sipflow.optim._sampling._gradient_sampling"}
MAX_FUNCTION_LINES = 80  # without the docstring
MAX_FILE_LINES = 500


def test_no_long_files_or_functions():
    long = []
    for path in sorted(ROOT.rglob("*.py")):
        text = path.read_text()
        module = _module_name(path)
        if text.count("\n") > MAX_FILE_LINES:
            long.append(f"{module}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            n = node.end_lineno - node.lineno + 1
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                n -= first.end_lineno - first.lineno + 1
            if n > MAX_FUNCTION_LINES and f"{module}.{node.name}" not in LONG_ALLOWED:
                long.append(f"{module}.{node.name}: {n} lines")
    assert long == []


def test_gpl_reference_code_is_only_a_test_extra():
    """xrayutilities (GPL) checks the beamline presets; only sipflow.testing may import it."""
    offenders = []
    for path in ROOT.rglob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(n.split(".")[0] == "xrayutilities" for n in names) and \
                    "testing" not in path.relative_to(ROOT).parts:
                offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []
