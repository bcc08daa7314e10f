"""The exceptions of a log line's traceback as core/log_database_errors.py's filter writes them: a
database error by its first line (first_line), one linked to it (its chain, an exception group's
members) or holding one (as its argument, its text in its own) a copy that writes none of its
DETAIL, one holding none itself. Apart from the filter's walk of a line's arguments and keys,
which hands it the exceptions it meets.
"""
from __future__ import annotations

import operator
import re
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
DATABASE_ERRORS = (DatabaseError, psycopg2.Error)
# How many exceptions of a traceback (a chain's links, `raise ... from` or raised in an except; an
# exception group's members) are looked into: a group's members may each be a group or have a
# chain of their own, which a bound on the depth alone let multiply. One past them is written as
# one of a class of its name holding its text, with no links or members (_stand_in).
_CHAINED = 64
# How many of an exception's arguments are looked into for a database error: an exception of a
# million arguments (`ValueError(*rows)`) costs a look at 64 of them, not a walk of all.
_ARGS = 64


def exception_shown(error: BaseException) -> BaseException:
    """`error` as a line is to write it (_chain_shown), or `error` itself when no database error
    is among the exceptions it links to (its chain, a group's members, theirs) or their arguments
    (`raise RuntimeError(exc) from exc`, Celery's wrapping): one that holds none is written as it
    is, a cycle among them too (copied to cut the cycle, a type that cannot be copied was written
    as a stand-in, a SyntaxError without its source line). It looks at the exceptions
    _chain_shown writes, in its order and by its count, so that an error's text quoted in one
    is known however far from it the error lies; past _CHAINED, it is _chain_shown's too."""
    pending, seen, held, bounded = [error], set(), [], False
    while pending:
        linked = pending.pop()
        if linked is None or id(linked) in seen:
            continue
        if isinstance(linked, DATABASE_ERRORS):
            held.append(linked)  # its own links are not written (first_line_only)
            continue
        held += _args_held(linked)  # a stand-in past the bound writes them too, in its text
        if _unlinked(linked):
            continue  # not counted, as _chain_shown does not count it
        if len(seen) >= _CHAINED:
            bounded = True
            continue
        seen.add(id(linked))
        # _chain_shown's order: the cause's, the context's, then each member's, depth first.
        if isinstance(linked, BaseExceptionGroup):
            pending += reversed(linked.exceptions)
        pending += (linked.__context__, linked.__cause__)
    return _chain_shown(error, {}, _texts(held)) if held or bounded else error


def _unlinked(error: BaseException) -> bool:
    """Whether `error` has no links to follow (no cause or context, not a group): both walks pass
    it by without counting it against _CHAINED. By identity: a link's own __eq__ may raise, or
    call it None."""
    return error.__cause__ is None and error.__context__ is None and not isinstance(error, BaseExceptionGroup)


def _args_held(error: BaseException) -> list[BaseException]:
    """The database errors among an exception's first _ARGS arguments. Its args are only read as
    a tuple and its arguments only by their types: a class's own `args` (None, a property that
    raises) holds none, and a lazy object among them (Django's SimpleLazyObject, whose
    isinstance reads its __class__, running its setup, a query maybe) is not made to run. A
    filter that raised lost the line, and ended Celery's handling of a task's failure."""
    held = []
    try:
        args = error.args
        if type(args) is tuple:
            for arg in args[:_ARGS]:
                if type(arg) is not str and issubclass(type(arg), DATABASE_ERRORS):  # a text the most often
                    held.append(arg)
    except BaseException:  # noqa: BLE001 - an exception's own args: it holds none the filter can see
        return []
    return held


def _texts(errors: list[BaseException]) -> list[tuple[str, str]]:
    """The whole texts of database errors, as str() and repr() write them (an f-string's `{exc}`,
    `{exc!r}`), and each as a text's repr writes it inside its quotes (_escaped: an exception
    whose text is its argument's repr, a KeyError's, one of more than one argument's, `{exc.args}`),
    and as a repr writes that again (`{exc.args}` in a KeyError's text),
    each with what is written in its place: the error's first line only. The longest first, so
    that none is replaced inside another's."""
    texts: dict[str, str] = {}
    for error in errors:
        try:
            shown = first_line_only(error)
            for whole, line in ((str(error).strip(), str(shown)), (repr(error), repr(shown))):
                if not whole or whole == line:
                    continue
                found = {whole: line}
                for _ in range(2):  # escaped once, and a repr of that (`{exc.args}` in a KeyError's)
                    escapes = {escaped: escaped_line for text, text_line in found.items()
                               for escaped, escaped_line in zip(_escaped(text), _escaped(text_line))}
                    found = {**escapes, **found}  # (a text no repr changes keeps its own line)
                texts.update(found)
        except BaseException:  # noqa: BLE001, S112 - an error's own __str__: no text of it to look for
            continue
    return sorted(texts.items(), key=lambda pair: -len(pair[0]))


def _escaped(text: str) -> tuple[str, str]:
    """`text` as repr() writes it inside the quotes of a text holding it: its line breaks as `\\n`,
    and its quotes as repr() chose for the whole, `'` escaped or not (the second: in a text of
    both quotes, the first: as the text alone would be)."""
    return repr(text)[1:-1], repr(text + "'\"")[1:-4]


def _text_shown(text: str, texts: list[tuple[str, str]]) -> str:
    """`text` with each database error's whole text in it (_texts) as its first line; `text`
    itself if it holds none."""
    for whole, line in texts:
        if whole in text:
            text = text.replace(whole, line)
    return text


def _args_shown(error: BaseException, texts: list[tuple[str, str]]) -> tuple[Any, ...] | None:
    """`error`'s arguments as its copy is to hold them: a database error among its first _ARGS
    its first line only (_args_held's), and a text among them holding a database error's whole
    text (_texts: an f-string of one in its chain) that text's first line; None if none changed,
    or its args are not a tuple that can be read."""
    try:
        args = error.args
        if type(args) is not tuple:
            return None
        looked = args[:_ARGS]
        shown = tuple(first_line_only(arg) if issubclass(type(arg), DATABASE_ERRORS)
                      else _text_shown(arg, texts) if type(arg) is str else arg for arg in looked)
    except BaseException:  # noqa: BLE001 - an exception's own args (_args_held)
        return None
    return None if all(map(operator.is_, shown, looked)) else shown + args[_ARGS:]


def _notes_shown(error: BaseException, texts: list[tuple[str, str]]) -> list[Any] | None:
    """`error`'s notes (add_note's, which its traceback writes below it) with each database
    error's whole text in them its first line (_texts); None if none changed, or it has none."""
    try:
        notes = vars(error).get("__notes__")
        if type(notes) is not list:
            return None
        shown = [_text_shown(note, texts) if type(note) is str else note for note in notes]
    except BaseException:  # noqa: BLE001 - an exception's own __dict__: notes not seen are not shown
        return None
    return None if all(map(operator.is_, shown, notes)) else shown


def _chain_shown(error: BaseException, seen: dict[int, BaseException | None],
                 texts: list[tuple[str, str]]) -> BaseException:
    """`error` as its traceback is to be written: a database error its first line only, without
    the causes chained to it (psycopg2's, of the same text); another exception itself if no
    database error is chained to it, among its members (an exception group's) or arguments, nor
    its text in theirs or its notes (`texts`), else a copy of it chained to the shown ones, its
    members the shown ones, its arguments _args_shown's, its notes _notes_shown's: the exception
    raised is the caller's, which it may raise again or hand on. Each exception with links or
    members counts against _CHAINED, as exception_shown counts it; one past them is a stand-in
    with no links, its text shown: what its links hold goes unsearched.
    `seen`: the shown of each exception looked into, None while its own links are being shown;
    `texts`: the database errors' whole texts to write as their first lines (_texts)."""
    if isinstance(error, DATABASE_ERRORS):
        return first_line_only(error).with_traceback(error.__traceback__)
    members = error.exceptions if isinstance(error, BaseExceptionGroup) else ()
    args, notes = _args_shown(error, texts), _notes_shown(error, texts)
    if _unlinked(error):  # not counted (a group of plain members past the bound is its own)
        return error if args is None and notes is None else _noted(_copied(error, args, texts), notes)
    if len(seen) >= _CHAINED:
        return _stand_in(error, texts).with_traceback(error.__traceback__)
    links = (error.__cause__, error.__context__)
    seen[id(error)] = None
    shown_links = [_link_shown(link, seen, texts) for link in links]
    shown_members = [_stand_in(member, texts).with_traceback(member.__traceback__) if member_shown is None
                     else member_shown
                     for member, member_shown in ((member, _link_shown(member, seen, texts)) for member in members)]
    shown = error
    # A link back to an exception under way (a cycle), shown as None, is one to an original that
    # may yet be copied, whose traceback would then be written whole: the copy cuts it.
    if args is not None or notes is not None or any(map(operator.is_not, (*shown_links, *shown_members),
                                                         (*links, *members))):
        shown = _noted(_group_copied(error, shown_members, texts) if members else _copied(error, args, texts), notes)
        shown.__cause__, shown.__context__ = shown_links
        shown.__suppress_context__ = error.__suppress_context__  # after __cause__, which sets it
    seen[id(error)] = shown
    return shown


def _noted(shown: BaseException, notes: list[Any] | None) -> BaseException:
    """`shown` with `notes` (_notes_shown's) in place of its original's, where they changed."""
    if notes is not None:
        shown.__notes__ = notes
    return shown


def _link_shown(link: BaseException | None, seen: dict[int, BaseException | None],
                texts: list[tuple[str, str]]) -> BaseException | None:
    """The shown of a link of a chain or a group's member (_chain_shown); None for none, or for a
    link back to an exception whose links are being shown (a cycle)."""
    if link is None:
        return None
    if id(link) in seen:
        return seen[id(link)]
    return _chain_shown(link, seen, texts)


def _group_copied(group: BaseExceptionGroup, members: list[BaseException],
                  texts: list[tuple[str, str]]) -> BaseException:
    """A copy of an exception group holding `members`, made by its derive() (what except* makes
    its parts with, which a subclass of other arguments overrides), with its notes and traceback;
    else, or if its message holds a database error's whole text (derive() keeps it), _stand_in(group)."""
    try:
        copy = group.derive(members)
        if isinstance(copy, BaseExceptionGroup) and _text_shown(str(copy), texts) == str(copy):
            if hasattr(group, "__notes__"):
                copy.__notes__ = list(group.__notes__)
            return copy.with_traceback(group.__traceback__)
    except BaseException:  # noqa: BLE001, S110 - whatever a subclass's own derive raises
        pass
    return _stand_in(group, texts).with_traceback(group.__traceback__)


def _copied(error: BaseException, args: tuple[Any, ...] | None, texts: list[tuple[str, str]]) -> BaseException:
    """A copy of `error` holding `args` (_args_shown; its own for None): its type, attributes and
    traceback, made without its __init__ (which may take other arguments, or do something), if
    it writes the text `error` does, each database error's whole text in it its first line
    (_texts), and its repr none; else _stand_in(error)."""
    try:
        if args is None:
            args = error.args
        copy = type(error).__new__(type(error), *args)
        copy.args = args
        copy.__dict__.update(error.__dict__)
        # A type keeping its state out of args and __dict__ (in __slots__, or C fields its
        # __init__ sets) may raise, in Celery's handling of the failure, or write another text
        # (a UnicodeDecodeError's copy none); one whose __str__ writes an attribute of the text.
        text = str(copy)
        written = text + repr(copy)
        if text.strip() == _text_shown(str(error), texts).strip() and _text_shown(written, texts) == written:
            return copy.with_traceback(error.__traceback__)
    except BaseException:  # noqa: BLE001, S110 - whatever a type's own __new__, __repr__ or __str__ raises
        pass
    return _stand_in(error, texts).with_traceback(error.__traceback__)


def _stand_in(error: BaseException, texts: list[tuple[str, str]]) -> BaseException:
    """An exception of a class named as `error`'s (its module and name: what a handler grouping
    by type, Sentry's, sees) holding its text (each database error's whole text in it its first
    line, _texts), with no links or members: not of its type, which could not be copied (its
    bases' neither, nor an exception group's members: the traceback writes none of them)."""
    kind = type(error)
    try:
        text = _text_shown(str(error), texts)
    except BaseException:  # noqa: BLE001 - an error's own __str__: its name says what it was
        text = ""
    named = type(kind.__name__, (Exception if isinstance(error, Exception) else BaseException,),
                 {"__module__": kind.__module__, "__qualname__": kind.__qualname__})
    return named(text) if text else named()


def first_line_only(error: DatabaseError | psycopg2.Error) -> BaseException:
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
