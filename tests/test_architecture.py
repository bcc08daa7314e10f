"""The rules of docs/architecture.md that a reader cannot see at a glance, checked on the source:
no import cycle between the modules of core/, jobs/ and webhooks/ (imports inside functions
count too: they hide a cycle, they do not remove it), webhooks never imports jobs, core imports
no app, an import inside a function only where the list below says why, and no module over
the size a newcomer can read."""
from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import REPO

PACKAGES = ("core", "jobs", "webhooks", "openapi", "console")
MAX_MODULE_LINES = 360

# (module, imported module) -> why the import must wait inside its function.
FUNCTION_LEVEL_IMPORTS = {
    ("core.errors", "rest_framework.views"): "DRF's settings import core.errors (EXCEPTION_HANDLER)",
    ("jobs.apps", "jobs.checks"): "loads the job types, and the checks against them, once the app registry is ready",
    ("jobs.apps", "jobs.deletion"): "connects a client's deletion to its deliveries' stop, importing models, once apps are ready",
    ("console.apps", "console"): "connects the workers' heartbeats, which import models, once apps are ready",
}


def _modules() -> Iterator[tuple[str, Path]]:
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            parts = path.relative_to(REPO).with_suffix("").parts
            yield ".".join(parts[:-1] if parts[-1] == "__init__" else parts), path


def _imports(path: Path) -> Iterator[tuple[str, str, bool]]:
    """Each name `path` imports (a module, or a module's attribute, which may be a module), the
    module its statement names, and whether the statement is inside a function. Imports under
    `if TYPE_CHECKING:` are left out: they never run."""
    tree = ast.parse(path.read_text())
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(child) for child in ast.walk(node))
    functions = [node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)]
    inside = {id(child) for function in functions for child in ast.walk(function)}
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, alias.name, id(node) in inside
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for name in [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]:
                yield name, node.module, id(node) in inside


def _graph() -> dict[str, set[str]]:
    modules = dict(_modules())
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for imported, _, _ in _imports(path):
            if imported in modules and imported != name:
                graph[name].add(imported)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles() -> None:
    assert _cycles(_graph()) == []


def test_the_cycle_check_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_webhooks_never_imports_jobs_and_core_imports_no_app() -> None:
    graph = _graph()
    assert {(m, t) for m, targets in graph.items() if m.startswith("webhooks") for t in targets if t.startswith("jobs")} == set()
    assert {
        (m, t) for m, targets in graph.items() if m.startswith("core")
        for t in targets if t.startswith(("jobs", "webhooks", "openapi", "console"))
    } == set()


def test_imports_inside_functions_are_only_those_that_must_wait() -> None:
    found = {
        (name, statement)
        for name, path in _modules()
        for _, statement, in_function in _imports(path)
        if in_function
    }
    assert found == set(FUNCTION_LEVEL_IMPORTS)


def test_no_module_is_longer_than_a_newcomer_reads() -> None:
    # The packages' modules, and the repository's own beside them (gunicorn's worker and its modules).
    paths = [path for _, path in _modules()] + sorted(REPO.glob("*.py"))
    lines = {str(path.relative_to(REPO)): len(path.read_text().splitlines()) for path in paths}
    long = {name: n for name, n in lines.items() if n > MAX_MODULE_LINES}
    assert long == {}
