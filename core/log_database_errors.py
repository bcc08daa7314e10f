"""A database error in the log as its first line only, wherever a line carries it: PostgreSQL's
DETAIL and CONTEXT quote the values it refused (a key, a job's output: a client's data). The
filter is core/logs.py's LOGGING's, on every line of the standard library's logging and of
structlog's own (its keys), and gunicorn.conf.py's.
"""
from __future__ import annotations

import logging
import operator
import reprlib
import sys
import traceback
import uuid
from collections import deque
from collections.abc import Mapping
from typing import Any

from core.log_database_errors_chains import (
    DATABASE_ERRORS,
    exception_shown,
    first_line,
    first_line_only,
)

# first_line is the services' and workers' too (a WARNING's text), imported from here.
__all__ = ["DatabaseErrorFirstLine", "first_line"]


# The containers whose text is each item's repr (a database error's whole text), by exact type: a
# namedtuple's repr and constructor differ, and a subclass's may be anything.
_CONTAINERS = frozenset({list, tuple, set, frozenset, dict})
# Containers of other types whose repr writes their items' (a namedtuple, an OrderedDict, a
# deque): looked into, never copied; one holding a database error is written as a name alone.
_OTHER_CONTAINERS = (list, tuple, set, frozenset, dict, deque)
# How many containers deep an argument is copied to show a database error in it (a dict in a list
# in a tuple, and one more); one deeper holding one is written as reprlib writes one past its
# level (`[...]`), and one holding none as it is.
_NESTED = 4
# How many items of a line's containers are looked into at most: a container holding itself, or
# millions of items in containers, cannot make a line's walk endless. A container whose items are
# not all looked at within it is written as one past the depth (`[...]`), as one holding an error
# would be: a line naming more items than that loses them rather than risk the DETAIL.
_LOOKED_AT = 10_000
# The types of a line's usual arguments (ids, numbers, text), which hold no error: a line or a
# container of only these costs one look at their types, not a walk of them.
_PLAIN = frozenset({str, int, float, bool, type(None), uuid.UUID})


class DatabaseErrorFirstLine(logging.Filter):
    """A line's database error (a logger.exception's, Celery's ERROR for a task that failed for
    good, "Task ... raised unexpected: ..."): its first line, at the end of its traceback, which
    still says where it was raised, and in Celery's message. PostgreSQL's DETAIL and CONTEXT
    quote the values it refused (a key, a job's output: a client's data), and its chained
    causes repeat them; the retries before it are logged with the first line only
    (core/celery.py). One the traceback's exception was raised from, or while handling, too
    (`raise ... from`: a task's, a view's whose 500 Django logs), which the traceback writes
    whole above it, and one among an exception group's members, which it writes each of. An
    exception of these holding one as its argument (`raise RuntimeError(exc) from exc`, Celery's
    wrapping), or its text in its own or its notes (`raise ValueError(f"save failed: {exc}")`
    while handling it, escaped in a repr too), writes its first line in its place. A database
    error among a line's arguments too (positional or named, in a list, tuple, set or dict of
    them, or a group's member), which Celery writes with %r in a few lines of its own; one that
    is the line's message (`logger.exception(error)`); and one among the keys of structlog's own
    line. A line naming none is let through as it is, its arguments the same objects."""

    def filter(self, record: logging.LogRecord) -> bool:
        # Celery's lines that write the error with %r: "Task handler raised error: %r" (the
        # worker's handling of a failure that came from the pool), "Signal handler %r raised: %r";
        # and a line of named arguments (`%(error)s`), logging's args its one mapping.
        args = record.args
        if type(args) is tuple:
            if not _all_plain(args):
                record.args = _shown(args, _NESTED + 1, _Budget())
        elif isinstance(args, Mapping):
            named = args if type(args) is dict else dict(args)  # a defaultdict's defaults kept, unless shown
            record.args = args if (shown_args := _shown(named, _NESTED + 1, _Budget())) is named else shown_args
        message = record.msg
        if type(message) is not str:
            # structlog's line's message is its keys (ProcessorFormatter's); another is written by str().
            record.msg = _event_shown(message) if type(message) is dict else _shown(message, _NESTED, _Budget())
        error = record.exc_info[1] if record.exc_info else None
        shown = exception_shown(error) if isinstance(error, BaseException) else error
        if shown is error:
            return True
        record.exc_info = (type(shown), shown, shown.__traceback__)
        record.exc_text = None  # a handler's before this one wrote the original's
        if isinstance(record.args, dict) and "exc" in record.args:
            # Celery's, which passes the same values as `extra` (record.data, which a handler
            # such as Sentry's sends), the whole traceback's text among them.
            record.args = record.data = {**record.args, "exc": repr(shown),
                                         "traceback": "".join(traceback.format_exception(shown))}
        return True


def _event_shown(event: dict[str, Any]) -> dict[str, Any]:
    """structlog's own line's keys, each value shown as a line's argument is, and its exception as
    a traceback's is (`exc_info`: True for the one being handled, which the filter, called where
    the line is written, sees too; an exception; or sys.exc_info()'s three); the line itself if
    none changed, so that one of plain keys costs a look at each."""
    raised = event.get("exc_info")
    if raised is None and _PLAIN.issuperset(map(type, event.values())):
        return event
    if raised is True:
        raised = sys.exc_info()[1]
    elif type(raised) is tuple:
        raised = raised[1] if len(raised) > 1 else None
    shown = exception_shown(raised) if isinstance(raised, BaseException) else raised
    budget = _Budget()
    changed = {key: after for key, value in event.items()
               if type(value) not in _PLAIN and (after := _shown(value, _NESTED, budget)) is not value}
    if shown is not raised:
        changed["exc_info"] = shown
    return {**event, **changed} if changed else event


class _Written(str):
    """A text written as it is, in a container too (its repr is itself, unquoted)."""

    def __repr__(self) -> str:
        return str(self)


class _Budget:
    """How many more items of a line's containers may be looked into (_LOOKED_AT)."""

    __slots__ = ("items",)

    def __init__(self) -> None:
        self.items = _LOOKED_AT


# What writes a container past the depth searched, as reprlib's repr() does one past its level.
_PAST_LEVEL = reprlib.Repr()


def _shown(arg: Any, depth: int, budget: _Budget) -> Any:
    """A log line's argument as the filter lets it through: a database error its first line only,
    an exception whose group or chain holds one a copy (its repr writes a group's members), one in
    a container too, `depth` containers deep (a copy of each container on the way), and a
    container deeper holding one as `[...]`, `{...}`; `arg` itself where nothing in it changed."""
    kind = type(arg)
    if kind in _PLAIN:
        return arg
    if kind in _CONTAINERS:
        if _all_plain(arg):
            return arg
        budget.items -= len(arg)
        if budget.items < 0 or depth == 0 and _holds_error(arg, budget):
            return _Written(_PAST_LEVEL.repr1(arg, 0))
        if depth == 0:
            return arg
        if kind is dict:
            pairs = [(_shown(key, depth - 1, budget), _shown(value, depth - 1, budget)) for key, value in arg.items()]
            same = all(shown[0] is key and shown[1] is value for shown, (key, value) in zip(pairs, arg.items()))
            return arg if same else dict(pairs)
        items = [_shown(item, depth - 1, budget) for item in arg]
        return arg if all(map(operator.is_, items, arg)) else kind(items)
    if isinstance(arg, DATABASE_ERRORS):
        return first_line_only(arg)
    if isinstance(arg, BaseException):
        return exception_shown(arg)
    if isinstance(arg, _OTHER_CONTAINERS) and not _all_plain(arg) and _holds_error(arg, budget):
        # Its own repr would write the error whole, and no copy of it can be made in general.
        return _Written(f"<{kind.__qualname__} holding a database error, or too many items to look through>")
    return arg


def _all_plain(container: Any) -> bool:
    """Whether a container's items (a dict's keys, values) are all plain: it holds no error."""
    if isinstance(container, dict):
        return _PLAIN.issuperset(map(type, container)) and _PLAIN.issuperset(map(type, container.values()))
    return _PLAIN.issuperset(map(type, container))


def _holds_error(container: Any, budget: _Budget) -> bool:
    """Whether a container past the depth copied holds an exception the filter shows otherwise,
    at any depth; or more items than are left to look into (`budget`), which it takes for one
    that does."""
    pending = [container]
    while pending:
        held = pending.pop()
        for item in (*held.keys(), *held.values()) if isinstance(held, dict) else held:
            if isinstance(item, _OTHER_CONTAINERS):
                if _all_plain(item):
                    continue
                budget.items -= len(item)
                if budget.items < 0:
                    return True
                pending.append(item)
            elif isinstance(item, BaseException) and _shown(item, 0, budget) is not item:
                return True
    return False


