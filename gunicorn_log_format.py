"""The formats of gunicorn's lines (gunicorn_worker.py's loggers): under LOG_FORMAT=text each line
printable, its request id at its end; under json one JSON object a line, as core/logs.py writes
the application's. gunicorn's master imports this module: it imports nothing of `core`."""
from __future__ import annotations

import logging
from typing import Any

import structlog
from gunicorn import glogging


def printable(text: str, *, backslashes: bool = True) -> str:
    """core/logs.py's _printable, written again (that module imports Django): `text` with each
    backslash doubled and each character str.isprintable() refuses (controls, line and paragraph
    separators, bidirectional overrides) written as repr writes them (`\\x1b`, `\\r`,
    `\\x85`), the rest as it is. `backslashes=False` for text whose client bytes came through
    a repr, which doubled their backslashes itself. tests/test_gunicorn_worker.py checks that
    both write the same."""
    if backslashes and "\\" in text:
        text = text.replace("\\", "\\\\")
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


class RequestIdEnded(logging.Formatter):
    """The text format's: a line with a request id (RequestIdNamed) ends with ` request_id=<id>`,
    on the message's line, before any traceback. A message its arguments do not fit raises in
    the handler, which reports it ("--- Logging error ---"), never out of gunicorn's call: its
    answer is still sent.

    Each line printable, as the application's text lines are: the message's control characters
    escaped, and the backslashes of the text arguments it names as they are (the method and URI
    of its `Error handling request %s %s`), not those of its own text, since gunicorn quotes what
    a client sent there through repr (its `Invalid request from ip=...` WARNING: `'GET
    /a\\x1b[2J HTTP/1.1'`), which doubled them, and the access line's values are escaped before
    gunicorn quotes them (PrintableAtoms); a traceback's lines each indented and printable, so
    that no line of an exception's message starts a line of the log."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        if isinstance(record.args, tuple) and record.args:  # it fit them already (Formatter.format)
            record.message = str(record.msg) % tuple(printable(arg) if isinstance(arg, str) else arg for arg in record.args)
        line = printable(super().formatMessage(record), backslashes=False)
        request_id = getattr(record, "request_id", None)
        return f"{line} request_id={request_id}" if request_id else line

    def formatException(self, ei: Any) -> str:
        return "\n".join("    " + printable(line) for line in super().formatException(ei).split("\n"))


def json_formatter() -> logging.Formatter:
    """The JSON format's: a line as core/logs.py writes the application's (`timestamp`, `level`,
    `logger`, `message`, a traceback's `exception`), with the `request_id` of the answer it is
    about (RequestIdNamed). Its processors are those of core/logs.py's JSON format, written again:
    that module imports Django, and `core` the Celery app, which the master must not load;
    tests/test_gunicorn_worker.py checks that both write the same keys."""
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.stdlib.ExtraAdder(allow=["request_id"]),
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.EventRenamer("message"),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
    )


class PrintableAtoms(glogging.SafeAtoms):
    """gunicorn's values of the text access line, each printable (backslashes doubled) before a
    backslash goes before each double quote, the one thing gunicorn escapes. Its parser lets a
    header's value hold bytes 0x80-0xff, read as Latin-1: a User-Agent's 0x85 (NEL, a line break
    to Python's splitlines and to log viewers) began a line of the log, its 0x9b (an 8-bit CSI)
    reached the terminal; and a referer's backslash before a quote ended its quoted value early,
    the rest of the referer read as fields of the line. Escaped when the format reads a value:
    gunicorn gathers every header and environ variable, the format reads about nine."""

    def __init__(self, atoms: dict[str, Any]) -> None:
        dict.__init__(self, atoms)  # SafeAtoms's own escaping, of every value, done in __getitem__

    def __getitem__(self, key: str) -> Any:
        value = super().__getitem__(key)
        return printable(value).replace('"', '\\"') if isinstance(value, str) else value
