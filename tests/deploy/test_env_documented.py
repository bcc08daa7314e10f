"""Every variable the service reads is in .env.example and in README's environment table."""
from __future__ import annotations

import ast
import re
from pathlib import Path

from tests.conftest import REPO

# Set by the image or the shell for the scripts, or by gunicorn.conf.py for the API's processes
# (JOBAPI_WEB_PROCESS), never by an operator.
NOT_CONFIGURATION = {"VIRTUAL_ENV", "PWD", "JOBAPI_WEB_PROCESS"}
ENV_EXAMPLE_LINE = re.compile(r"^#?\s*([A-Z][A-Z0-9_]*)=(.*)$")
SHELL_VARIABLE = re.compile(r"(?<!\$)\$\{([A-Z][A-Z0-9_]*)")


def settings_variables() -> set[str]:
    """Names passed to the django-environ reader: env("X"), env.bool("X"), env.db("X")..."""
    names = set()
    trees = [ast.parse(path.read_text()) for path in sorted((REPO / "core" / "settings").glob("*.py"))]
    for node in (node for tree in trees for node in ast.walk(tree)):
        if not (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)):
            continue
        func = node.func
        if (isinstance(func, ast.Name) and func.id == "env") or (
            isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "env"
        ):
            names.add(node.args[0].value)
    return names


def _is_os_environ(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Attribute) and node.attr == "environ"
        and isinstance(node.value, ast.Name) and node.value.id == "os"
    )


def python_environ_reads(path: Path) -> set[str]:
    """os.environ.get("X"), os.environ["X"] and os.getenv("X") in a Python file."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            if isinstance(func, ast.Attribute) and (
                (func.attr == "get" and _is_os_environ(func.value))
                or (func.attr == "getenv" and isinstance(func.value, ast.Name) and func.value.id == "os")
            ):
                names.add(node.args[0].value)
        elif (
            isinstance(node, ast.Subscript) and _is_os_environ(node.value)
            and isinstance(node.slice, ast.Constant)
        ):
            names.add(node.slice.value)
    return names


def scripts() -> list[Path]:
    return sorted(path for path in (REPO / "scripts").iterdir() if path.is_file())


def is_python(path: Path) -> bool:
    return path.suffix == ".py" or path.read_text().startswith("#!/usr/bin/env python")


def variables_read() -> dict[str, str]:
    """Every variable read anywhere in the deployment, mapped to one place that reads it."""
    found: dict[str, str] = {}
    sources: list[tuple[str, set[str]]] = [
        ("core/settings/", settings_variables()),
        ("gunicorn.conf.py", python_environ_reads(REPO / "gunicorn.conf.py")),
        # docker compose itself interpolates ${X} from .env ($${X} is left to the container).
        ("docker-compose.yaml", set(SHELL_VARIABLE.findall((REPO / "docker-compose.yaml").read_text()))),
    ]
    for path in scripts():
        names = python_environ_reads(path) if is_python(path) else set(SHELL_VARIABLE.findall(path.read_text()))
        sources.append((f"scripts/{path.name}", names))
    for where, names in sources:
        for name in names - NOT_CONFIGURATION:
            found.setdefault(name, where)
    return found


def env_example() -> list[tuple[str, str, bool]]:
    """(name, value, active) for each `NAME=value` or commented-out `# NAME=value` line."""
    rows = []
    for line in (REPO / ".env.example").read_text().splitlines():
        if match := ENV_EXAMPLE_LINE.match(line):
            rows.append((match.group(1), match.group(2), not line.startswith("#")))
    return rows


def readme_table() -> dict[str, list[str]]:
    text = (REPO / "README.md").read_text()
    block = text.split("<!-- env-table:start -->", 1)[1].split("<!-- env-table:end -->", 1)[0]
    rows = {}
    for line in block.strip().splitlines()[2:]:  # after the header and the --- row
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        rows[cells[0].strip("`")] = cells
    return rows


def test_every_variable_read_is_in_env_example() -> None:
    documented = {name for name, _, _ in env_example()}

    missing = {name: where for name, where in variables_read().items() if name not in documented}

    assert not missing, f"add these to .env.example (and README's table): {missing}"


def test_env_example_lists_only_variables_that_are_read() -> None:
    read = variables_read()

    stale = [name for name, _, _ in env_example() if name not in read]

    assert not stale, f"nothing reads these any more: {stale}"


def test_env_example_lists_each_variable_once() -> None:
    names = [name for name, _, _ in env_example()]

    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)


def test_readme_env_table_matches_env_example_exactly() -> None:
    table = readme_table()

    assert set(table) == {name for name, _, _ in env_example()}
    for name, cells in table.items():
        assert len(cells) == 3 and all(cells), f"README row for {name} needs a default and a meaning"


def test_env_example_values_mean_the_same_to_compose_and_django() -> None:
    """Compose's env_file has no quoting rules Django's reader shares; `$` would be expanded."""
    for name, value, active in env_example():
        if active:
            assert not re.search(r"[\"'$]|\s#", value), f"{name}: keep the value plain"


def test_secrets_have_no_usable_example_value() -> None:
    """An operator who copies the file as is gets an error, not a published secret."""
    values = {name: value for name, value, active in env_example() if active}

    assert values["SECRET_KEY"] == ""
    assert values["POSTGRES_PASSWORD"] == ""
    assert values["DEBUG"] == "false"
