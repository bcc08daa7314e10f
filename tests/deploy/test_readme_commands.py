"""The README's commands (and the docs' it points to) run as shown in a fresh shell: no `.venv`
activated, so the project's Python and its tools are called through `.venv/bin/`."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from django.core.management import get_commands

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


def docker_compose_commands() -> list[tuple[str, str, str]]:
    """(doc, command, its comment) for each `docker compose` command of the docs' sh/bash blocks,
    and each one written inline in their text (comment empty), whitespace made single spaces."""
    commands = []
    for name in DOCS:
        text = (REPO / name).read_text()
        for block in FENCE.findall(text):
            for line in block.replace("\\\n", " ").splitlines():
                parts = re.split(r"(?:^|\s)#\s", line, maxsplit=1)
                command, comment = parts[0].strip(), (parts[1] if len(parts) > 1 else "")
                if command.startswith("docker compose"):
                    commands.append((name, " ".join(command.split()), comment))
        for inline in re.findall(r"`(docker compose [^`]*)`", text):
            commands.append((name, " ".join(inline.split()), ""))
    return commands


# Compose's subcommands the docs use, and how many of their words after the options are services
# (None: all of them; 1: the first, the rest being the command run in it).
SERVICE_ARGUMENTS = {"exec": 1, "run": 1, "up": None, "stop": None, "start": None, "logs": None,
                     "ps": None, "build": None}
# Options followed by a value (a word that is no service).
VALUED_OPTIONS = {"--profile", "--tail", "-p", "--scale", "-f"}


def test_the_docs_docker_compose_commands_name_services_that_exist() -> None:
    services = set(yaml.safe_load((REPO / "docker-compose.yaml").read_text())["services"])
    unknown = []
    for name, command, _ in docker_compose_commands():
        words = command.split("|")[0].split()[2:]
        while words and words[0].startswith("-"):  # compose's own options, before the subcommand
            words = words[2:] if words[0] in VALUED_OPTIONS else words[1:]
        if not words or words[0] not in SERVICE_ARGUMENTS:
            continue
        subcommand, rest, named = words[0], words[1:], []
        while rest:
            word = rest.pop(0)
            if word == "--scale":
                named.append(rest.pop(0).split("=")[0])
            elif word in VALUED_OPTIONS - {"-f"} or (word == "-f" and subcommand != "logs"):
                rest.pop(0)
            elif not word.startswith("-") and not word.startswith("<"):
                named.append(word)
                if SERVICE_ARGUMENTS[subcommand] == 1:
                    break
        unknown += [(name, command, service) for service in named if service not in services]

    assert not unknown, f"no such compose service: {unknown}"


def test_the_docs_manage_py_commands_exist() -> None:
    written = {
        (name, match)
        for name in DOCS
        for match in re.findall(r"manage\.py ([a-z_]+)", (REPO / name).read_text())
    }

    assert written
    assert not [(name, command) for name, command in written if command not in get_commands()]


def test_a_compose_ps_said_to_show_an_exited_one_shot_lists_stopped_containers() -> None:
    # `docker compose ps` lists running containers only: migrate, exited 0, is not among them
    # without --all.
    shown = [(name, command) for name, command, comment in docker_compose_commands()
             if command.startswith("docker compose ps") and "exited" in comment]

    assert shown
    assert not [(name, command) for name, command in shown
                if not {"-a", "--all"} & set(command.split())], shown
