"""A database error where a line carries it other than as an argument or a traceback's chain: as
the line's message, among an exception group's members, deeper than the filter searches, among
structlog's own line's keys; and an exception the filter cannot copy as it is. In both formats:
PostgreSQL's DETAIL quotes the values it refused, a client's data, and each line has the error's
first line only."""
from __future__ import annotations

import logging
from typing import Any

import pytest
from django.db import DatabaseError

from core import logs
from tests.core.test_logs_database_errors import _failure_logged, _unique_violation
from tests.core.test_logs_database_errors_nested import (
    RAISED,
    _raised,
    _Slotted,
    _written,
)

FORMATS = pytest.mark.parametrize("json", [True, False], ids=["json", "text"])
# The error's first line, up to the quotes that JSON escapes.
FIRST = "duplicate key value violates unique constraint"


def _thrown(error: Exception) -> Exception:
    """`error` raised, with the traceback a task's carries."""
    try:
        raise error
    except Exception as exc:  # noqa: BLE001 - whichever the case raises
        return exc


@FORMATS
def test_a_database_error_that_is_a_line_s_message_carries_no_detail(db: Any, json: bool) -> None:
    # Given an error PostgreSQL raised quoting a client's value
    marker, error = _unique_violation()

    # When a service logs the error itself as the message, with and without its traceback
    def log(logger: logging.Logger) -> None:
        logger.error(error)
        try:
            raise error
        except DatabaseError as exc:
            logger.exception(exc)  # noqa: TRY401 - the error as the message is the case

    logged = _written(json, log)

    # Then each line is the error's first line (before, its whole text: the DETAIL, the value)
    assert logged.count(FIRST) == 3 and RAISED in logged, logged
    assert marker not in logged and "DETAIL" not in logged, logged


@FORMATS
def test_a_database_error_in_an_exception_group_carries_no_detail(db: Any, json: bool) -> None:
    # Given exception groups holding an error PostgreSQL raised quoting a client's value: one
    # directly, one in a group in it, one whose member was raised from it, and an error raised
    # from a group
    marker, error = _unique_violation()

    def caused() -> None:
        raise RuntimeError("recording failed") from error

    grouped = ExceptionGroup("deliveries failed", [ValueError("other"), error])
    nested = ExceptionGroup("steps failed", [ExceptionGroup("deliveries failed", [error])])
    linked = ExceptionGroup("deliveries failed", [_raised(caused)])

    def from_group() -> None:
        raise RuntimeError("recording failed") from grouped

    for raised in (grouped, nested, linked, _raised(from_group)):
        # When a service logs it with its traceback, in either format
        logged = _written(json, lambda logger, raised=raised: logger.error("Deliveries lost", exc_info=raised))

        # Then the traceback writes each member, the database error by its first line, not the value
        assert RAISED in logged and "deliveries failed" in logged, logged
        assert marker not in logged and "DETAIL" not in logged, logged
    assert grouped.exceptions[1] is error and "DETAIL" in str(error)  # the exception raised keeps its own


def test_celery_s_error_for_a_task_that_raised_an_exception_group_carries_no_detail(db: Any) -> None:
    # Given a task's error, a group holding one PostgreSQL raised quoting a client's value
    marker, error = _unique_violation()
    group = _thrown(ExceptionGroup("deliveries failed", [error]))

    # When Celery's trace logs its failure, its repr in the message and its traceback in the data
    logged = _failure_logged(group)

    # Then the message names the member by its first line, and no line carries the value
    assert "raised unexpected: ExceptionGroup('deliveries failed', [IntegrityError(" in logged, logged
    assert RAISED in logged and marker not in logged and "DETAIL" not in logged, logged


@FORMATS
def test_a_container_deeper_than_the_filter_copies_is_written_as_a_marker_if_it_holds_one(db: Any, json: bool) -> None:
    # Given an error PostgreSQL raised quoting a client's value, five containers deep
    marker, error = _unique_violation()

    # When a line names it among its arguments, and one names a dict and a tuple as deep
    def log(logger: logging.Logger) -> None:
        logger.warning("Deliveries not recorded: %s", [[[[[error]]]]])
        logger.warning("Deliveries not recorded: %s, %s", [[[[{"id": 7}]]]], [[[[(8,)]]]])

    logged = _written(json, log)

    # Then the fifth container holding the error is written as reprlib writes one past its level
    # (before, whole: the error's DETAIL, the value with it); those holding none as they are
    assert "Deliveries not recorded: [[[[[...]]]]]" in logged, logged
    assert "Deliveries not recorded: [[[[{'id': 7}]]]], [[[[(8,)]]]]" in logged, logged
    assert marker not in logged and "DETAIL" not in logged, logged


@FORMATS
def test_structlog_s_own_line_with_a_database_error_carries_no_detail(db: Any, json: bool) -> None:
    # Given an error PostgreSQL raised quoting a client's value
    marker, error = _unique_violation()

    # When a line of structlog's own names it among its keys, and one is written while handling it
    def log(logger: logging.Logger) -> None:
        structured = logs.get_logger(logger.name)
        structured.error("delivery.unrecorded", delivery_id=7, error=error, errors=[error])
        try:
            raise error
        except DatabaseError:
            structured.exception("delivery.unrecorded", delivery_id=8)

    logged = _written(json, log)

    # Then the keys and the traceback carry its first line (before, its whole text), not the value
    assert logged.count(FIRST) == 3 and RAISED in logged, logged
    assert marker not in logged and "DETAIL" not in logged, logged


@FORMATS
def test_an_error_that_cannot_be_copied_is_written_under_its_type_s_name(db: Any, json: bool) -> None:
    # Given errors raised from one PostgreSQL raised quoting a client's value, of a type whose
    # copy cannot be written (its state in __slots__), and a UnicodeDecodeError, whose copy made
    # without its __init__ has no text
    marker, error = _unique_violation()

    def slotted() -> None:
        raise _Slotted(7) from error

    def undecodable() -> None:
        try:
            raise error
        except DatabaseError:
            b"\xe9".decode()

    for make, last in [(slotted, f"{_Slotted.__module__}._Slotted"),
                       (undecodable, "UnicodeDecodeError: 'utf-8' codec can't decode byte 0xe9")]:
        # When a service logs it with its traceback, in either format
        logged = _written(json, lambda logger, make=make: logger.error("Delivery 1 lost", exc_info=_raised(make)))

        # Then its traceback names its type, as a handler grouping by type sees it (before, as
        # `Exception`), and its text (before, none); the database error by its first line
        written = logged.replace("\\n", "\n").replace("\\'", "'")
        assert last in written and "Exception:" not in written, logged
        assert RAISED in logged and marker not in logged and "DETAIL" not in logged, logged


def test_celery_s_error_for_an_error_that_cannot_be_copied_names_its_type(db: Any) -> None:
    # Given a task's error, raised from one PostgreSQL raised quoting a client's value, whose copy
    # cannot be written
    marker, error = _unique_violation()
    raised = _thrown(_Slotted(7))
    raised.__cause__ = error

    # When Celery's trace logs its failure
    logged = _failure_logged(raised)

    # Then its message names the type (before, `Exception('..._Slotted')`), not the value
    assert "raised unexpected: _Slotted()" in logged, logged
    assert RAISED in logged and marker not in logged and "DETAIL" not in logged, logged
