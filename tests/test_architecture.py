"""The layering holds: no import circles inside evovlm, and the core never imports the zoo or the app.

Every import counts, also inside functions, under TYPE_CHECKING, and by name through importlib:
an arrow is an arrow. The core is io/, merge/, eval/, evolve/ and dfs/ (and the modules beside them).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "evovlm"
CORE = ("evovlm.io", "evovlm.merge", "evovlm.eval", "evovlm.evolve", "evovlm.dfs", "evovlm.arch",
        "evovlm.errors", "evovlm.plugins", "evovlm.progress", "evovlm.dtypes", "evovlm.argtypes")
OUTSIDE_THE_CORE = ("evovlm.zoo", "evovlm.app")


def _modules() -> dict[str, Path]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        modules[name.removesuffix(".__init__")] = path
    return modules


def _imports(modules: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the evovlm modules it imports (the longest known prefix of each imported name)."""
    def known(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [f"{node.module}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and \
                    node.value.startswith(OUTSIDE_THE_CORE):  # importlib.import_module("evovlm.zoo")
                names = [node.value.split(":")[0]]
            targets |= {found for name in names if name.startswith("evovlm") and (found := known(name))}
        graph[module] = targets - {module}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
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

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_no_import_circles():
    assert _cycles(_imports(_modules())) == []


def test_the_core_never_imports_the_zoo_or_the_app():
    graph = _imports(_modules())
    arrows = [f"{module} -> {target}" for module, targets in sorted(graph.items()) if module.startswith(CORE)
              for target in sorted(targets) if target.startswith(OUTSIDE_THE_CORE)]
    assert arrows == []


def test_the_checks_can_fail():
    """The two checks above on made-up graphs: a circle and an arrow into the zoo are found."""
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_the_code_passes_the_linter():
    """ruff with the project's configuration (pyproject.toml [tool.ruff]): line length, imports, unused names."""
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise"],
                            cwd=PACKAGE.parent, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
