"""The package's import graph, read from the source (AST): no cycles, and no layer importing one above it.

Run: .venv/bin/python -m pytest tests/test_import_graph.py -q
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "unitvox"
# The pipeline's top layer: what runs stages, Jobs, sweeps and diagnoses.
TOP = ("stages", "controller", "ablations", "diagnostics", "use")
# Usable without the pipeline (model code, health, units, metrics) and the ground under them.
BELOW_TOP = ("model", "vocoder", "units", "health", "evaluation", "store", "prometheus", "config",
             "layout", "errors", "registry", "report", "audio", "exitcodes", "filterlist")


def _modules() -> dict[str, tuple[Path, bool]]:
    found = {}
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        found[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return found


MODULES = _modules()


def _known(name: str) -> str | None:
    """The module `name` executes: itself, or the nearest package above it (an imported name)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _targets(module: str, is_package: bool, node: ast.Import | ast.ImportFrom) -> list[str]:
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            package = module.split(".") if is_package else module.split(".")[:-1]
            package = package[: len(package) - node.level + 1]
            base = ".".join(package + ([node.module] if node.module else []))
        names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
    return [known for name in names if name.split(".")[0] == PACKAGE and (known := _known(name))]


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _imports(tree: ast.AST, *, module_level: bool) -> list[ast.Import | ast.ImportFrom]:
    """Imports that run when the module loads, or also those inside functions when not `module_level`.

    Imports under `if TYPE_CHECKING:` never run, so they are left out either way.
    """
    found = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                found.append(child)
            elif _is_type_checking(child) or module_level and isinstance(
                    child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                continue
            else:
                visit(child)

    visit(tree)
    return found


def graph(*, module_level: bool = True) -> dict[str, set[str]]:
    edges = {}
    for module, (path, is_package) in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        edges[module] = {target for node in _imports(tree, module_level=module_level)
                         for target in _targets(module, is_package, node) if target != module}
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each a cycle of imports."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges.get(node, ())):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            connect(node)
    return found


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_the_graph_sees_the_package():
    edges = graph()
    assert "unitvox.vocoder.loop" in edges and "unitvox.layout" in edges["unitvox.vocoder.loop"]


def test_cycles_are_found_when_there_are_some():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles_at_module_level():
    assert cycles(graph()) == []


def test_no_import_cycles_even_through_imports_inside_functions():
    assert cycles(graph(module_level=False)) == []


@pytest.mark.parametrize("layer", BELOW_TOP)
def test_layers_below_the_pipeline_never_import_it(layer):
    edges = graph(module_level=False)
    climbing = sorted(f"{module} -> {target}" for module, targets in edges.items() if _layer(module) == layer
                      for target in targets if _layer(target) in TOP)
    assert climbing == []
