"""A database error the filter reaches through an exception group (a line's argument, structlog's
key, a member whose chain leads back to its group, a subclass of other arguments), past the
exceptions it looks into, or as psycopg2 raised it; and a line holding none, written as it is.
In both formats: PostgreSQL's DETAIL quotes the values it refused, a client's data."""
from __future__ import annotations

import collections
import logging
import re
import time
from typing import Any, Self

import pytest
from django.utils.functional import SimpleLazyObject

from core import logs
from core.log_database_errors import DatabaseErrorFirstLine
from tests.core.test_logs_database_errors import _unique_violation
from tests.core.test_logs_database_errors_nested import RAISED, _raised, _written

FORMATS = pytest.mark.parametrize("json", [True, False], ids=["json", "text"])
FIRST = "duplicate key value violates unique constraint"


class _CodedGroup(ExceptionGroup):
    """An exception group of other arguments, as Python's documentation shows one."""

    def __new__(cls, message: str, errors: list[Exception], code: int) -> Self:
        group = super().__new__(cls, message, errors)
        group.code = code
        return group

    def derive(self, errors: list[Exception]) -> _CodedGroup:  # type: ignore[override]
        return _CodedGroup(self.message, errors, self.code)


class _ArglessGroup(ExceptionGroup):
    """A group whose __init__ leaves its args empty."""

    def __init__(self, *args: Any) -> None:
        BaseException.__init__(self)


class _Falsy(Exception):
    """An error that is false, as any object may be."""

    def __bool__(self) -> bool:
        return False


class _DeriveInterrupted(ExceptionGroup):
    """A group whose derive() raises what an `except Exception` does not catch."""

    def derive(self, errors: list[Exception]) -> ExceptionGroup:  # type: ignore[override]
        raise KeyboardInterrupt


class _Interrupting(Exception):
    """An error whose text raises what an `except Exception` does not catch."""

    def __str__(self) -> str:
        raise KeyboardInterrupt


@FORMATS
def test_an_exception_group_that_is_an_argument_or_a_key_carries_no_detail(db: Any, json: bool) -> None:
    # Given a group holding an error PostgreSQL raised quoting a client's value
    marker, error = _unique_violation()
    group = ExceptionGroup("deliveries failed", [error])

    # When Celery's line writes it with %r, and structlog's line names it among its keys
    def log(logger: logging.Logger) -> None:
        logger.error("Task handler raised error: %r", group)
        logs.get_logger(logger.name).error("delivery.failed", errors=group)

    logged = _written(json, log)

    # Then both write the member by its first line (before, its whole text through the group's repr)
    assert logged.count(FIRST) == 2 and marker not in logged and "DETAIL" not in logged, logged


def _long_chain(error: BaseException) -> BaseException:
    for step in range(5000):
        raised = RuntimeError(f"step {step}")
        raised.__cause__, error = error, raised
    return error


def _groups_of_groups(error: BaseException) -> BaseException:
    return ExceptionGroup("steps failed", [
        ExceptionGroup(f"step {step}", [_raised(lambda: _raise_from(error)) for _ in range(10)])
        for step in range(10)])


def _raise_from(error: BaseException) -> None:
    raise RuntimeError("delivery failed") from error


@FORMATS
def test_a_traceback_past_the_exceptions_looked_into_carries_no_detail(db: Any, json: bool) -> None:
    # Given tracebacks of more exceptions than the filter looks into, a database error among them
    # (its DETAIL quoting a client's value): a chain of 5,000 links, a group of ten groups of ten
    error = _unique_violation()[1]
    for raised in (_long_chain(error), _groups_of_groups(error)):
        assert "DETAIL" in "".join(logging.Formatter().formatException((None, raised, None)))

        # When a service logs it with its traceback
        logged = _written(json, lambda logger, raised=raised: logger.error("Steps lost", exc_info=raised))

        # Then what lies past them is not written (before, the original exception whole)
        assert "Steps lost" in logged and "DETAIL" not in logged, logged


def _member_raised_handling_its_group(error: Exception) -> BaseException:
    member = ValueError("delivery 1 failed")
    group = ExceptionGroup("deliveries failed", [member, error])
    try:
        raise group
    except ExceptionGroup:
        try:
            raise member
        except ValueError:
            pass
    return group


def _member_re_raised_by_except_star(error: Exception) -> BaseException:
    try:
        try:
            raise ExceptionGroup("deliveries failed", [ValueError("delivery 1 failed"), error])
        except* ValueError as failed:
            raise failed.exceptions[0]  # the member itself, as a handler re-raises it
    except BaseExceptionGroup as exc:  # the member raised and the rest, as except* raises them
        return exc
    raise AssertionError("not raised")


@FORMATS
def test_a_member_whose_chain_leads_back_to_its_group_carries_no_detail(db: Any, json: bool) -> None:
    # Given groups holding a database error and a member raised while handling the group
    error = _unique_violation()[1]
    for raised in (_member_raised_handling_its_group(error), _member_re_raised_by_except_star(error)):
        # When a service logs one with its traceback
        logged = _written(json, lambda logger, raised=raised: logger.error("Deliveries lost", exc_info=raised))

        # Then the member's link back writes no original group (before, the whole DETAIL)
        assert "delivery 1 failed" in logged and "DETAIL" not in logged, logged


@FORMATS
def test_a_group_of_other_arguments_keeps_its_type_and_members(db: Any, json: bool) -> None:
    # Given a group of a subclass of its own arguments, holding a database error and another
    marker, error = _unique_violation()
    group = _raised(lambda: _raise(_CodedGroup("deliveries failed", [error, ValueError("delivery 2 failed")], 7)))

    # When a service logs it with its traceback
    logged = _written(json, lambda logger: logger.error("Deliveries lost", exc_info=group))

    # Then its traceback names its type and every member (before, a stand-in of none)
    assert "_CodedGroup: deliveries failed" in logged and "delivery 2 failed" in logged, logged
    assert RAISED in logged and marker not in logged and "DETAIL" not in logged, logged


def _raise(error: BaseException) -> None:
    raise error


@FORMATS
def test_an_error_of_no_arguments_or_an_unwritable_text_is_still_logged(db: Any, json: bool) -> None:
    # Given a group whose args are empty and an error whose text raises KeyboardInterrupt, each
    # holding a database error
    marker, error = _unique_violation()
    argless = _ArglessGroup("deliveries failed", [RuntimeError("delivery 1 failed")])
    argless.exceptions[0].__cause__ = error
    interrupting = _Interrupting()
    interrupting.__cause__ = error

    # When a service logs each with its traceback
    def log(logger: logging.Logger) -> None:
        logger.error("Deliveries lost", exc_info=argless)
        logger.error("Delivery 2 lost", exc_info=interrupting)

    logged = _written(json, log)

    # Then both lines are written (before, the filter raised: no line), without the value
    assert "Deliveries lost" in logged and "Delivery 2 lost" in logged, logged
    assert RAISED in logged and marker not in logged and "DETAIL" not in logged, logged


@FORMATS
def test_psycopg2_s_own_error_carries_no_detail(db: Any, json: bool) -> None:
    # Given psycopg2's error, not wrapped by Django's, quoting a client's value
    marker, error = _unique_violation()
    raw = error.__cause__

    # When a line names it as an argument and with its traceback
    logged = _written(json, lambda logger: logger.error("Delivery lost: %r", raw, exc_info=raw))

    # Then both write its first line (before, its whole text)
    assert "UniqueViolation" in logged and FIRST in logged, logged
    assert marker not in logged and "DETAIL" not in logged, logged


# Timestamps, which differ between two writes of one line.
_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT[\d:.]+Z?")


@FORMATS
def test_a_line_holding_no_database_error_is_written_as_it_is(
    db: Any, json: bool, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given lines of containers deeper than the filter copies, or longer than it looks through,
    # a mapping of defaults, a cycle of exceptions (a SyntaxError's copy lost its source line) and
    # a group member that is false, holding no database error
    cycle = _raised(lambda: compile("x = = 1", "f.py", "exec"))
    cycle.__context__ = ValueError("while compiling")
    cycle.__context__.__context__ = cycle
    falsy = _Falsy("member")
    falsy.add_note("a note on the member")

    def log(logger: logging.Logger) -> None:
        logger.warning("Deep: %s", [1, [2, [3, [4, [5, [6]]]]]])
        logger.warning({"a": [[[[[1]]]]], (((((1,),),),),): "b", (((((2,),),),),): "c"})
        logger.warning("Named: %(ids)s", {"ids": [[[[[7]]]]]})
        logger.warning("Long: %s %s", list(range(6000)), [list(range(6000))])
        logger.warning("Defaults: %(a)s %(b)s", collections.defaultdict(str, a=1))
        logger.warning("Cycle", exc_info=cycle)
        logger.warning("Falsy", exc_info=ExceptionGroup("g", [falsy]))
        logs.get_logger(logger.name).warning("job.nested", deep=[[[[[["x"]]]]]],
                                             deepd={"a": {"b": {"c": {"d": {"e": 1}}}}}, ids=[1, 2])

    # When they are written through the filter, and without it
    filtered = _written(json, log)
    monkeypatch.setattr(DatabaseErrorFirstLine, "filter", lambda self, record: True)
    unfiltered = _written(json, log)

    # Then they are the same (before, each deep container `[...]`: JSON arrays as text, keys merged)
    assert _TIMESTAMP.sub("T", filtered) == _TIMESTAMP.sub("T", unfiltered), filtered
    assert "[...]" not in filtered and "{...}" not in filtered, filtered


@FORMATS
def test_other_containers_and_groups_that_cannot_be_copied_carry_no_detail(db: Any, json: bool) -> None:
    # Given a database error quoting a client's value in a namedtuple, a deque and an OrderedDict,
    # and in a group whose derive() raises KeyboardInterrupt
    marker, error = _unique_violation()
    pair = collections.namedtuple("Pair", "error attempt")

    # When lines name them (an argument, structlog's key, a traceback)
    def log(logger: logging.Logger) -> None:
        logger.error("Pair: %s", pair(error, 1))
        logger.error("Queue: %r", collections.deque([error]))
        logs.get_logger(logger.name).error("delivery.failed", errors=collections.OrderedDict(first=error))
        logger.error("Interrupted", exc_info=_DeriveInterrupted("g", [error]))

    logged = _written(json, log)

    # Then each is written without the value (before, each whole; the last raised in the filter,
    # its line lost)
    assert "Pair:" in logged and "Queue:" in logged and "Interrupted" in logged, logged
    assert marker not in logged and "DETAIL" not in logged, logged


def test_a_traceback_another_handler_wrote_first_carries_no_detail(db: Any) -> None:
    # Given a line with a database error's traceback, written first by a handler without the
    # filter (logging keeps the text it made on the record)
    marker, error = _unique_violation()
    record = logging.LogRecord("tests.logs.chained", logging.ERROR, __file__, 1, "Lost", None,
                               (type(error), error, error.__traceback__))
    assert marker in logging.Formatter().format(record)

    # When the filter's handler writes it
    DatabaseErrorFirstLine().filter(record)
    written = logging.Formatter().format(record)

    # Then it writes the traceback again, without the value (before, the first handler's text)
    assert FIRST in written and marker not in written, written


class _ArgsNone(Exception):
    """An error whose class sets args to None, as any class may."""

    args = None  # type: ignore[assignment]


class _ArgsRaising(Exception):
    """An error whose args is a property that raises."""

    @property
    def args(self) -> tuple[Any, ...]:  # type: ignore[override]
        raise RuntimeError("no args")


def test_a_line_of_an_exception_with_odd_arguments_is_let_through_as_it_is() -> None:
    # Given exceptions holding no database error: of args None, of args that raise, holding a
    # lazy object (whose setup could be a query), of a million arguments, a group of more plain
    # members than the filter looks into; and a chain longer than that headed by one of args None
    setups: list[int] = []
    lazy = SimpleLazyObject(lambda: setups.append(1) or "user 7")
    chain = _long_chain(ValueError("first step"))
    chain.__cause__ = _ArgsNone("step lost")

    for raised in (_ArgsNone("step lost"), _ArgsRaising("step lost"), PermissionError(lazy),
                   ValueError(*range(1_000_000)),
                   ExceptionGroup("deliveries failed", [ValueError(f"delivery {n}") for n in range(70)]), chain):
        record = logging.LogRecord("tests.logs.odd", logging.ERROR, __file__, 1, "Step %s lost", (7,),
                                   (type(raised), raised, None))

        # When the filter sees its line
        filter_ = DatabaseErrorFirstLine()
        started = time.perf_counter()
        kept = filter_.filter(record)
        took = time.perf_counter() - started

        # Then it lets it through (before, it raised: the line lost, Celery's handling of a
        # task's failure ended), its exception the same, a plain one's arguments unread, the
        # lazy object's setup not run, and a million arguments cost a look at some (before, 40 ms)
        assert kept is True and record.args == (7,) and record.msg == "Step %s lost"
        assert record.exc_info[1] is raised or raised is chain, record.exc_info
        assert took < 0.01, took
    assert setups == []


@FORMATS
def test_an_error_s_text_quoted_past_the_exceptions_looked_into_carries_no_detail(db: Any, json: bool) -> None:
    # Given an error PostgreSQL raised quoting a client's value, its text quoted in another's: a
    # member of a group of 72 members, the error first among them; one raised from it while
    # handling a chain of 5,000 links (the filter looked at the chain first and at the error past
    # its 64 exceptions, so it knew no text to look for)
    marker, error = _unique_violation()
    group = ExceptionGroup("deliveries failed", [error, ValueError(f"save failed: {error}"),
                                                 *(ValueError(f"delivery {number}") for number in range(70))])
    quoting = ValueError(f"save failed: {error}")
    quoting.__cause__, quoting.__context__ = error, _long_chain(RuntimeError("first step"))

    for raised in (group, quoting):
        # When a service logs it with its traceback
        logged = _written(json, lambda logger, raised=raised: logger.error("Deliveries lost", exc_info=raised))

        # Then the quoting one writes the error's first line (before, its whole text: the value)
        assert f"save failed: {FIRST}" in logged.replace('\\"', '"'), logged
        assert marker not in logged and "DETAIL" not in logged, logged
