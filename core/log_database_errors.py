"""A database error in the log as its first line only, wherever a line carries it: PostgreSQL's
DETAIL and CONTEXT quote the values it refused (a key, a job's output: a client's data). The
filter is core/logs.py's LOGGING's, on every line of the standard library's logging and of
structlog's own (its keys), and gunicorn.conf.py's.
"""
from __future__ import annotations

import logging
import operator
import re
import reprlib
import sys
import traceback
import uuid
from collections import deque
from collections.abc import Mapping
from typing import Any

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
    except BaseException:  # noqa: BLE001 - an error's own __str__ (a subclass's, an argument's): its type names it
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


# The errors whose text PostgreSQL's DETAIL and CONTEXT are part of: Django's, and psycopg2's
# where a line names one that Django did not wrap (a raw cursor's, a pool's).
_DATABASE_ERRORS = (DatabaseError, psycopg2.Error)
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
# How many exceptions of a traceback with links of their own (a chain, `raise ... from` or raised
# in an except; an exception group's members) are looked into: a group's members may each be a
# group or have a chain of their own, which a bound on the depth alone let multiply. One past them
# is written as one of a class of its name holding its text, with no links or members (_stand_in).
_CHAINED = 64
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
    whole above it, and one among an exception group's members, which it writes each of. A
    database error among a line's arguments too (positional or named, in a list, tuple, set or
    dict of them, or a group's member), which Celery writes with %r in a few lines of its own; one
    that is the line's message (`logger.exception(error)`); and one among the keys of structlog's
    own line. A line naming none is let through as it is, its arguments the same objects."""

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
        shown = _exception_shown(error) if isinstance(error, BaseException) else error
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
    shown = _exception_shown(raised) if isinstance(raised, BaseException) else raised
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
    if isinstance(arg, _DATABASE_ERRORS):
        return _first_line_only(arg)
    if isinstance(arg, BaseException):
        return _exception_shown(arg)
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


def _exception_shown(error: BaseException) -> BaseException:
    """`error` as a line is to write it (_chain_shown), or `error` itself when no database error
    is among the exceptions it links to (its chain, a group's members, theirs): one that holds
    none is written as it is, a cycle among them too (copied to cut the cycle, a type that
    cannot be copied was written as a stand-in, a SyntaxError without its source line)."""
    pending, seen = [error], set()
    while pending:
        linked = pending.pop()
        if linked is None or id(linked) in seen:
            continue
        if isinstance(linked, _DATABASE_ERRORS) or len(seen) >= _CHAINED:
            return _chain_shown(error, {})
        seen.add(id(linked))
        pending += (linked.__cause__, linked.__context__,
                    *(linked.exceptions if isinstance(linked, BaseExceptionGroup) else ()))
    return error


def _chain_shown(error: BaseException, seen: dict[int, BaseException | None]) -> BaseException:
    """`error` as its traceback is to be written: a database error its first line only, without
    the causes chained to it (psycopg2's, of the same text); another exception itself if no
    database error is chained to it or among its members (an exception group's), else a copy of
    it chained to the shown ones, its members the shown ones: the exception raised is the
    caller's, which it may raise again or hand on. One past the _CHAINED exceptions looked into
    is a stand-in with no links: what they hold goes unsearched.
    `seen`: the shown of each exception looked into, None while its own links are being shown."""
    if isinstance(error, _DATABASE_ERRORS):
        return _first_line_only(error).with_traceback(error.__traceback__)
    members = error.exceptions if isinstance(error, BaseExceptionGroup) else ()
    if error.__cause__ is None and error.__context__ is None and not members:
        return error
    if len(seen) >= _CHAINED:
        return _stand_in(error).with_traceback(error.__traceback__)
    seen[id(error)] = None
    links = (error.__cause__, error.__context__)
    shown_links = [_link_shown(link, seen) for link in links]
    shown_members = [_stand_in(member).with_traceback(member.__traceback__) if member_shown is None else member_shown
                     for member, member_shown in ((member, _link_shown(member, seen)) for member in members)]
    shown = error
    # A link back to an exception under way (a cycle), shown as None, is one to an original that
    # may yet be copied, whose traceback would then be written whole: the copy cuts it.
    if any(map(operator.is_not, (*shown_links, *shown_members), (*links, *members))):
        shown = _group_copied(error, shown_members) if members else _copied(error)
        shown.__cause__, shown.__context__ = shown_links
        shown.__suppress_context__ = error.__suppress_context__  # after __cause__, which sets it
    seen[id(error)] = shown
    return shown


def _link_shown(link: BaseException | None, seen: dict[int, BaseException | None]) -> BaseException | None:
    """The shown of a link of a chain or a group's member (_chain_shown); None for none, or for a
    link back to an exception whose links are being shown (a cycle)."""
    if link is None:
        return None
    if id(link) in seen:
        return seen[id(link)]
    return _chain_shown(link, seen)


def _group_copied(group: BaseExceptionGroup, members: list[BaseException]) -> BaseException:
    """A copy of an exception group holding `members`, made by its derive() (what except* makes
    its parts with, which a subclass of other arguments overrides), with its notes and traceback;
    else _stand_in(group)."""
    try:
        copy = group.derive(members)
        if isinstance(copy, BaseExceptionGroup):
            if hasattr(group, "__notes__"):
                copy.__notes__ = list(group.__notes__)
            return copy.with_traceback(group.__traceback__)
    except BaseException:  # noqa: BLE001, S110 - whatever a subclass's own derive raises
        pass
    return _stand_in(group).with_traceback(group.__traceback__)


def _copied(error: BaseException) -> BaseException:
    """A copy of `error`: its type, arguments, attributes and traceback, made without its
    __init__ (which may take other arguments, or do something), if it writes the text `error`
    does; else _stand_in(error)."""
    try:
        copy = type(error).__new__(type(error), *error.args)
        copy.args = error.args
        copy.__dict__.update(error.__dict__)
        # A type keeping its state out of args and __dict__ (in __slots__, or C fields its
        # __init__ sets) may raise, in Celery's handling of the failure, or write another text
        # (a UnicodeDecodeError's copy none).
        if str(copy) == str(error):
            repr(copy)
            return copy.with_traceback(error.__traceback__)
    except BaseException:  # noqa: BLE001, S110 - whatever a type's own __new__, __repr__ or __str__ raises
        pass
    return _stand_in(error).with_traceback(error.__traceback__)


def _stand_in(error: BaseException) -> BaseException:
    """An exception of a class named as `error`'s (its module and name: what a handler grouping
    by type, Sentry's, sees) holding its text, with no links or members: not of its type, which
    could not be copied (its bases' neither, nor an exception group's members: the traceback
    writes none of them)."""
    kind = type(error)
    try:
        text = str(error)
    except BaseException:  # noqa: BLE001 - an error's own __str__: its name says what it was
        text = ""
    named = type(kind.__name__, (Exception if isinstance(error, Exception) else BaseException,),
                 {"__module__": kind.__module__, "__qualname__": kind.__qualname__})
    return named(text) if text else named()


def _first_line_only(error: DatabaseError | psycopg2.Error) -> BaseException:
    """`error` as one of its type holding its first line, without its chained causes; an error
    of a type that cannot be made so (an __init__ of other arguments, a __str__ that raises) as
    a DatabaseError naming its type: a logging filter that raised would end Celery's handling
    of the task's failure."""
    try:
        line = first_line(error)
        shown = type(error)(line)
        if str(shown) == line:
            return shown
    except BaseException:  # noqa: BLE001, S110 - whatever a subclass's own methods raise
        pass
    return DatabaseError(type(error).__name__)
