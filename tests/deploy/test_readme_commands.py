"""The README's commands (and the docs' it points to) run as shown in a fresh shell: no `.venv`
activated, so the project's Python and its tools are called through `.venv/bin/`."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO

DOCS = ["README.md", "docs/api.md", "docs/streams.md", "docs/webhooks.md", "docs/deployment.md"]
FENCE = re.compile(r"^```(?:sh|bash)\n(.*?)^```", re.MULTILINE | re.DOTALL)
# What `make run` installs in .venv, and a fresh shell lacks (`python3` is there, for the stdlib).
VENV_TOOLS = {"python", "manage.py", "pip", "openapi-python-client", "pytest", "honcho", "celery"}
SEGMENT_START = re.compile(r"(?:^|\|\s*|&&\s*|;\s*|\$\()\s*([\w./-]+)")


def shell_commands() -> list[tuple[str, str]]:
    """Each command of the docs' sh/bash blocks, continuation lines joined, comments left out."""
    commands = []
    for name in DOCS:
        for block in FENCE.findall((REPO / name).read_text()):
            for line in block.replace("\\\n", " ").splitlines():
                command = re.split(r"(?:^|\s)#\s", line, maxsplit=1)[0].strip()
                if command and not command.startswith("docker compose"):  # those run in the image
                    commands.append((name, command))
    return commands


def test_the_project_tools_are_called_through_the_venv() -> None:
    bare = [
        (name, command) for name, command in shell_commands()
        if any(word in VENV_TOOLS for word in SEGMENT_START.findall(command))
    ]
    inline = re.findall(r"`(manage\.py [^`]*)`", (REPO / "README.md").read_text())

    assert not bare, f"call these through .venv/bin/ (a fresh shell has no such command): {bare}"
    assert not inline, f"write these as .venv/bin/python manage.py ...: {inline}"


def test_curl_urls_with_brackets_turn_globbing_off() -> None:
    # curl reads [..] in a URL as a range of URLs: `?metadata[order]=42` fails, sending nothing.
    globbing = [
        (name, command) for name, command in shell_commands()
        if command.startswith("curl") and re.search(r"https?://\S*\[", command) and " -g" not in command
    ]

    assert not globbing, f"add -g (--globoff) to these: {globbing}"


# A fresh shell's PATH: the system's, without .venv/bin (nothing activated).
FRESH_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@pytest.mark.slow
def test_the_client_generation_command_runs_clean_in_a_fresh_shell(tmp_path: Path) -> None:
    # openapi-python-client formats what it writes with ruff, which it looks up on PATH: called
    # as .venv/bin/openapi-python-client from a shell that has not activated .venv, it found no
    # ruff and printed "Warning(s) encountered while generating ... ruff is not in PATH", the
    # client written unformatted.
    generate = {command for _, command in shell_commands() if "openapi-python-client generate" in command}
    (tmp_path / ".venv").symlink_to(REPO / ".venv")
    (tmp_path / "openapi").symlink_to(REPO / "openapi")

    assert generate, "the docs show no openapi-python-client command any more: drop this test"
    for command in generate:
        shutil.rmtree(tmp_path / "job_api_client", ignore_errors=True)
        completed = subprocess.run(
            ["bash", "-c", command], check=False, cwd=tmp_path, env={"PATH": FRESH_PATH, "HOME": str(tmp_path)},
            capture_output=True, text=True, timeout=300,
        )
        output = completed.stdout + completed.stderr

        assert completed.returncode == 0, output
        assert "Warning" not in output, f"{command}: {output}"
        assert (tmp_path / "job_api_client" / "client.py").is_file(), output
