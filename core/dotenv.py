"""The one reader of .env: the settings', scripts/dotenv.sh's and scripts/healthcheck's.

The scripts load this file by its path (runpy), without the `core` package (its Celery app):
it imports nothing of the project's.
"""
from __future__ import annotations

import io
import os
import re
from pathlib import Path

import environ

# A line django-environ reads as a variable (Env.read_env's own pattern).
_ASSIGNMENT = re.compile(r"\A(?:export )?[A-Za-z_0-9]+=")
# A comment after an unquoted value, as Compose reads one: from a `#` after a space.
_COMMENT = re.compile(r"\s+#.*\Z")
# A quoted value, with or without a comment after it.
_QUOTED = re.compile(r"""\A("[^"]*"|'[^']*')(?:\s+#.*)?\Z""")


class DotenvError(Exception):
    """.env is there but cannot be read; the message says why, never a value."""


def read_dotenv(path: Path | str) -> None:
    """Sets the variables of the .env at `path` that the environment does not set, through
    django-environ's reader; no file there: nothing. One there that cannot be read (not this
    user's to read, a link to nothing, not UTF-8 text) or with a line that is not `NAME=value`
    (`NAME = value`, which Compose takes) raises DotenvError: django-environ passes over a file
    it cannot open and logs a line it cannot read, whole (a secret's value with it), and the
    processes went on without those variables, on the defaults (the embedded SQLite database).
    A UTF-8 byte order mark (a Windows editor's) is not part of the first name."""
    if not os.path.lexists(path):
        return
    try:
        content = Path(path).read_bytes()
    except OSError as exc:
        raise DotenvError(exc.strerror or str(exc)) from None
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = content[:exc.start].count(b"\n") + 1
        raise DotenvError(f"line {line} is not UTF-8 text") from None
    lines = text.splitlines()
    for number, line in enumerate(lines, 1):
        if line.strip() and not line.lstrip().startswith("#") and not _ASSIGNMENT.match(line):
            raise DotenvError(f"line {number} is not NAME=value")
    assignments = (line.split("=", 1) for line in lines if _ASSIGNMENT.match(line))
    environ.Env.read_env(io.StringIO("\n".join(f"{name}={_value(value)}" for name, value in assignments)),
                         overwrite=False)


def _value(written: str) -> str:
    """A value as Compose reads it, for django-environ to take its quotes off: the spaces before
    and after it are none of it (around its quotes, if it has any), nor is a comment after it
    (` # ...`; a `#` with no space before it, or within quotes, is the value's). django-environ kept
    both: `ALLOWED_HOSTS=api.example.com ` (a space no editor shows) answered 400 to every
    request, `QUEUES=jobs ` stopped the worker, and `SECRET_KEY=... # rotated` was another key
    than the containers' (the webhook secrets sealed under it could not be opened)."""
    value = written.strip()
    if quoted := _QUOTED.match(value):
        return quoted.group(1)
    if value.startswith(("'", '"')):  # a quote inside (escaped), or none closing: as written
        return value
    return _COMMENT.sub("", value)
