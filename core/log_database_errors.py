"""A database error in the log as its first line only: PostgreSQL's DETAIL and CONTEXT quote the
values it refused (a key, a job's output: a client's data). The filter is core/logs.py's
LOGGING's, on every line, and gunicorn.conf.py's.
"""
from __future__ import annotations

import logging
import re
import traceback
from collections.abc import Mapping

import psycopg2
from django.db import DatabaseError, DataError


def first_line(exc: BaseException) -> str:
    """An error's first line (a driver's message runs on with hints), or its type's name: what a
    WARNING about a dependency says, where its traceback would tell nothing more. A PostgreSQL
    data exception's input that it quotes, a client's value, is `"…"` (_input_redacted). It never
    raises: its callers are in except blocks and signal receivers, where that lost the line."""
    try:
        text = str(exc)
        if isinstance(exc, DataError | psycopg2.DataError):
            text = _input_redacted(_primary_message(exc) or (text.strip().splitlines() or [""])[0])
    except Exception:  # noqa: BLE001 - an error's own __str__ (a subclass's, an argument's): its type names it
        text = ""
    return (text.strip().splitlines() or [type(exc).__name__])[0]


def _primary_message(exc: DataError | psycopg2.DataError) -> str | None:
    """PostgreSQL's primary message of psycopg2's error `exc` is, or of the one Django's error of
    the same message wraps: the input it quotes whole, line breaks too. None for an error that
    came through pickle (from a pool process), which carries its text alone."""
    cause = exc if isinstance(exc, psycopg2.Error) else exc.__cause__
    if isinstance(cause, psycopg2.Error) and cause.args == exc.args:
        return cause.diag.message_primary
    return None


def _input_redacted(message: str) -> str:
    """A data exception's primary message (SQLSTATE class 22, a value PostgreSQL could not take:
    psycopg2's DataError and only it, and Django's of it, pickled too) with the input it quotes as
    `"…"`: after the first `: "` (`invalid input syntax for type integer: "…"`, `invalid input
    value for enum "Mood": "…"`), else from the first double quote to the last (`value "…" is out
    of range for type integer`, `time zone "…" not recognized`).
    PostgreSQL quotes the input as it came, quotes and line breaks in it too, so no quote inside
    it can end the redaction early; what it names unquoted (a type, a token of RAISE) stays. An
    encoding's error quotes the encodings' names and writes the input's bytes in hex: those are `…`."""
    if "byte sequence" in message:  # invalid byte sequence for encoding "UTF8": 0xe9 0x41
        return re.sub(r"0x[0-9a-f]{2}(?: 0x[0-9a-f]{2})*", "…", message)
    start = message.find(': "')
    if start >= 0:
        return message[:start] + ': "…"'
    first, last = message.find('"'), message.rfind('"')
    if first < 0:
        return message
    return message[:first] + '"…"' + message[last + 1:] if last > first else message[:first] + '"…"'


class DatabaseErrorFirstLine(logging.Filter):
    """A line's database error (a logger.exception's, Celery's ERROR for a task that failed for
    good, "Task ... raised unexpected: ..."): its first line, at the end of its traceback, which
    still says where it was raised, and in Celery's message. PostgreSQL's DETAIL and CONTEXT
    quote the values it refused (a key, a job's output: a client's data), and its chained
    causes repeat them; the retries before it are logged with the first line only
    (core/celery.py). A database error among a line's arguments too (positional or named), which
    Celery writes with %r in a few lines of its own."""

    def filter(self, record: logging.LogRecord) -> bool:
        # Celery's lines that write the error with %r: "Task handler raised error: %r" (the
        # worker's handling of a failure that came from the pool), "Signal handler %r raised: %r";
        # and a line of named arguments (`%(error)s`), logging's args its one mapping.
        if isinstance(record.args, Mapping):
            record.args = {key: _shown(arg) for key, arg in record.args.items()}
        elif record.args:
            record.args = tuple(_shown(arg) for arg in record.args)
        error = record.exc_info[1] if record.exc_info else None
        if not isinstance(error, DatabaseError):
            return True
        shown = _first_line_only(error).with_traceback(error.__traceback__)
        record.exc_info = (type(shown), shown, shown.__traceback__)
        if isinstance(record.args, dict) and "exc" in record.args:
            # Celery's, which passes the same values as `extra` (record.data, which a handler
            # such as Sentry's sends), the whole traceback's text among them.
            record.args = record.data = {**record.args, "exc": repr(shown),
                                         "traceback": "".join(traceback.format_exception(shown))}
        return True


def _shown(arg: object) -> object:
    """A log line's argument as the filter lets it through: a database error its first line only,
    one in a list, tuple or set too, whose text is each item's repr (the error's whole text). One
    level deep: a container holding itself cannot make a filter recurse, and raise, in a call."""
    if type(arg) in (list, tuple, set, frozenset):  # exactly: a namedtuple's repr and constructor differ
        return type(arg)(_shown(item) if isinstance(item, DatabaseError) else item for item in arg)
    return _first_line_only(arg) if isinstance(arg, DatabaseError) else arg


def _first_line_only(error: DatabaseError) -> DatabaseError:
    """`error` as one of its type holding its first line, without its chained causes; an error
    of a type that cannot be made so (an __init__ of other arguments, a __str__ that raises) as
    a DatabaseError naming its type: a logging filter that raised would end Celery's handling
    of the task's failure."""
    try:
        line = first_line(error)
        shown = type(error)(line)
        if str(shown) == line:
            return shown
    except Exception:  # noqa: BLE001, S110 - whatever a subclass's own methods raise
        pass
    return DatabaseError(type(error).__name__)


