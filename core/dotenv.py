"""The one reader of .env: the settings', scripts/dotenv.sh's and scripts/healthcheck's.

The scripts load this file by its path (runpy), without the `core` package (its Celery app):
it imports nothing of the project's.
"""
from __future__ import annotations

import io
import os
from pathlib import Path

from dotenv.parser import parse_stream


class DotenvError(Exception):
    """.env is there but cannot be read; the message says why, never a value."""


def read_dotenv(path: Path | str) -> None:
    """Sets the variables of the .env at `path` that the environment does not set; no file
    there: nothing. Its lines are read as Compose reads them, by python-dotenv's parser: spaces
    around `=` and around a value are none of it, nor is a comment after it (` # ...`; a `#` with
    no space before it, or within quotes, is the value's), and a UTF-8 byte order mark (a Windows
    editor's) is not part of the first name. django-environ's own reader kept those spaces and
    comments (`ALLOWED_HOSTS=api.example.com `, a space no editor shows, answered 400 to every
    request; `SECRET_KEY=... # rotated` was another key than the containers'), dropped
    `NAME = value` with a warning that logged the line whole, secret and all, and passed over a
    file it could not open. A .env that cannot be read (not this user's to read, a link to
    nothing, not UTF-8 text) or with a line that is no assignment raises DotenvError: the
    processes went on without its variables, on the defaults (the embedded SQLite database)."""
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
    bindings = list(parse_stream(io.StringIO(text)))
    for binding in bindings:
        if binding.error:
            # The binding's text begins with the blank lines before it.
            written = binding.original.string
            blank = written[:len(written) - len(written.lstrip())].count("\n")
            raise DotenvError(f"line {binding.original.line + blank} is not NAME=value")
    for binding in bindings:
        if binding.key is not None and binding.value is not None:  # `NAME` alone: the environment's
            os.environ.setdefault(binding.key, binding.value)
