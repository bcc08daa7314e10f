"""The README's commands (and the docs' it points to) run as shown in a fresh shell: no `.venv`
activated, so the project's Python and its tools are called through `.venv/bin/`."""
from __future__ import annotations

import re

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
