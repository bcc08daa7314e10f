"""A database error a line carries deeper than as its argument or its exception: nested in its
arguments' containers, or chained to its exception (`raise ... from`, or raised while handling
it), in both formats, Celery's ERROR for a task and Django's for a 500 too. PostgreSQL's DETAIL
quotes the values it refused, a client's data: each line has the error's first line only."""
from __future__ import annotations

import io
import logging
import logging.config
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse
from django.test import Client
from django.urls import path

from core import logs
from tests.core.test_logs_database_errors import _failure_logged, _unique_violation

FIRST = 'duplicate key value violates unique constraint "refused_value_key"'
# The traceback's last line of it, up to the quotes that JSON escapes.
RAISED = "IntegrityError: duplicate key value violates unique constraint"


@pytest.fixture
def console() -> Iterator[Callable[[], str]]:
    """What the handler LOGGING configured has written since, read by calling it."""
    [handler] = [handler for handler in logging.getLogger().handlers if handler.name == "console"]
    stream = handler.setStream(io.StringIO())
    try:
        yield lambda: handler.stream.getvalue()
    finally:
        handler.setStream(stream)


def _written(json: bool, log: Callable[[logging.Logger], None]) -> str:
    """What `log` writes through a handler made as LOGGING makes the console's, in the format."""
    config = logs.logging_config(level="WARNING", json=json)
    configurator = logging.config.dictConfigClass(config)
    handler = logging.StreamHandler(io.StringIO())
    handler.setFormatter(configurator.configure_formatter(config["formatters"]["structured"]))
    for name in config["handlers"]["console"]["filters"]:
        handler.addFilter(configurator.configure_filter(config["filters"][name]))
    logger = logging.getLogger("tests.logs.chained")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        log(logger)
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    return handler.stream.getvalue()


def test_a_database_error_nested_in_a_line_s_arguments_carries_no_detail(db: Any, console: Callable[[], str]) -> None:
    # Given an error PostgreSQL raised quoting a client's value
    marker, error = _unique_violation()

    # When lines name it in a dict among their arguments, two containers deep, and in a list of
    # a line of named arguments, through the handler LOGGING configured
    logger = logging.getLogger("webhooks.recording")
    logger.warning("Delivery %s not recorded: %s", 7, {"error": error})
    logger.warning("Deliveries not recorded: %s", ([7, error],))
    logger.warning("Deliveries not recorded: %s", [{"error": error}])
    logger.warning("Delivery %(id)s not recorded: %(errors)s", {"id": 9, "errors": [(error,)]})

    # Then each line has the error's first line, the other values as they were, and not the value
    # (before, the error's whole text: its DETAIL, the value with it)
    first = f"IntegrityError('{FIRST}')"
    logged = console()
    assert f"Delivery 7 not recorded: {{'error': {first}}}" in logged, logged
    assert f"Deliveries not recorded: ([7, {first}],)" in logged, logged
    assert f"Deliveries not recorded: [{{'error': {first}}}]" in logged, logged
    assert f"Delivery 9 not recorded: [({first},)]" in logged, logged
    assert marker not in logged and "DETAIL" not in logged, logged


def _raised(make: Callable[[], None]) -> BaseException:
    try:
        make()
    except Exception as exc:  # noqa: BLE001 - whichever the case raises
        return exc
    raise AssertionError(make)


def _raised_handling(error: DatabaseError, make: Callable[[DatabaseError], Exception]) -> BaseException:
    """What `make` made of `error`, raised while handling it, as a service does."""

    def raise_() -> None:
        try:
            raise error
        except DatabaseError as exc:
            raise make(exc)  # while handling it: its context is the case

    return _raised(raise_)


def _traceback_written(json: bool, raised: BaseException) -> str:
    """What a service's line logging `raised` with its traceback writes, in the format."""
    return _written(json, lambda logger: logger.error("Delivery 1: its attempt's outcome could not be recorded",
                                                      exc_info=raised))


@pytest.mark.parametrize("json", [True, False], ids=["json", "text"])
def test_a_traceback_of_an_error_chained_to_a_database_error_carries_no_detail(db: Any, json: bool) -> None:
    # Given errors raised from one PostgreSQL raised quoting a client's value, while handling it,
    # and two links from it
    marker, error = _unique_violation()

    def caused() -> None:
        raise RuntimeError("recording failed") from error

    def handling() -> None:
        try:
            raise error
        except DatabaseError:
            raise RuntimeError("recording failed")

    def two_links() -> None:
        try:
            caused()
        except RuntimeError as exc:
            raise ValueError("outcome lost") from exc

    for make, link in [(caused, "direct cause"), (handling, "During handling"), (two_links, "direct cause")]:
        raised = _raised(make)
        chain = (raised.__cause__, raised.__context__)

        # When a service logs it with its traceback, in either format
        logged = _traceback_written(json, raised)

        # Then the traceback still writes the chain, the database error by its first line, and
        # not the value; the exception raised keeps its chain
        assert RAISED in logged and "RuntimeError: recording failed" in logged, logged
        assert link in logged and marker not in logged and "DETAIL" not in logged, logged
        assert (raised.__cause__, raised.__context__) == chain


def test_celery_s_error_for_a_task_that_raised_from_a_database_error_carries_no_detail(db: Any) -> None:
    # Given a task's error raised from one PostgreSQL raised quoting a client's value
    marker, error = _unique_violation()
    try:
        raise RuntimeError("recording failed") from error
    except RuntimeError as exc:
        caused = exc

    # When Celery's trace logs its failure (the traceback in its message's data too)
    logged = _failure_logged(caused)

    # Then it names the task's error, its traceback the database error's first line, not the value
    assert "raised unexpected: RuntimeError('recording failed')" in logged, logged
    assert RAISED in logged and marker not in logged and "DETAIL" not in logged, logged


def _failing_view(request: HttpRequest) -> HttpResponse:
    marker, error = _unique_violation()
    request.META["test.marker"] = marker
    raise RuntimeError("recording failed") from error


urlpatterns = [path("failing/", _failing_view)]


@pytest.mark.urls(__name__)
def test_django_s_error_for_a_500_raised_from_a_database_error_carries_no_detail(
    db: Any, console: Callable[[], str]
) -> None:
    # When a view raises from an error PostgreSQL raised quoting a client's value
    response = Client(raise_request_exception=False).get("/failing/")

    # Then Django's ERROR for the 500 writes the chain with the database error's first line, not the value
    assert response.status_code == 500
    marker = response.wsgi_request.META["test.marker"]
    logged = console()
    assert "Internal Server Error: /failing/" in logged and "RuntimeError: recording failed" in logged, logged
    assert RAISED in logged and marker not in logged and "DETAIL" not in logged, logged


class _Slotted(Exception):
    """An error whose state is in __slots__, which a copy made without __init__ lacks."""
    __slots__ = ("code",)

    def __init__(self, code: int) -> None:
        super().__init__()
        self.code = code

    def __repr__(self) -> str:
        return f"_Slotted(code={self.code})"

    def __reduce__(self) -> tuple[type[_Slotted], tuple[int]]:  # picklable, so Celery keeps it as it is
        return _Slotted, (self.code,)


def test_celery_s_error_for_an_error_the_filter_cannot_copy_is_still_written(db: Any) -> None:
    # Given a task's error, raised from a database error, of a type whose copy cannot be written
    marker, error = _unique_violation()
    try:
        raise _Slotted(7) from error
    except _Slotted as exc:
        raised = exc

    # When Celery's trace logs its failure
    logged = _failure_logged(raised)

    # Then its ERROR is written (the filter raised inside Celery's handling of the failure, and the
    # line was lost), naming the type, and the database error by its first line
    assert "raised unexpected" in logged and "_Slotted" in logged, logged
    assert RAISED in logged and marker not in logged and "DETAIL" not in logged, logged


@pytest.mark.parametrize("json", [True, False], ids=["json", "text"])
def test_an_error_holding_a_database_error_s_text_carries_no_detail(db: Any, json: bool) -> None:
    # Given errors made of one PostgreSQL raised quoting a client's value: it as their argument
    # (`raise RuntimeError(exc) from exc`, one made outside its except, a group's member), its
    # text in theirs (`raise ValueError(f"save failed: {exc}")` while handling it, its repr too)
    marker, error = _unique_violation()

    def wrapped() -> None:
        raise RuntimeError(error) from error

    def handling(text: Callable[[DatabaseError], str]) -> Callable[[], None]:
        def make() -> None:
            try:
                raise error
            except DatabaseError as exc:
                raise ValueError(text(exc)) from None  # no link shown: the line is its own
        return make

    unchained = RuntimeError("recording failed", error)
    for raised, line in [
        (_raised(wrapped), f"RuntimeError: {FIRST}"),
        (_raised(handling(lambda exc: f"save failed: {exc}")), f"ValueError: save failed: {FIRST}"),
        (_raised(handling(lambda exc: f"save failed: {exc!r}")), f"ValueError: save failed: IntegrityError('{FIRST}')"),
        (unchained, f"RuntimeError: ('recording failed', IntegrityError('{FIRST}'))"),
        (ExceptionGroup("deliveries not recorded", [RuntimeError(error)]), f"RuntimeError: {FIRST}"),
    ]:
        # When a service logs it with its traceback, in either format
        logged = _traceback_written(json, raised)

        # Then its own line writes the database error's first line, and not the value (before,
        # its whole text: the DETAIL, the value with it); the exception raised is unchanged
        written = logged.replace('\\"', '"') if json else logged
        assert line in written and marker not in logged and "DETAIL" not in logged, logged
        assert marker in "".join(traceback.format_exception(raised))


def test_celery_s_error_for_a_task_that_wrapped_a_database_error_carries_no_detail(db: Any) -> None:
    # Given a task's error holding one PostgreSQL raised quoting a client's value, as Celery's
    # own wrapping or a task's `raise RuntimeError(exc) from exc` makes
    marker, error = _unique_violation()
    try:
        raise RuntimeError(error) from error
    except RuntimeError as exc:
        wrapped = exc

    # When Celery's trace logs its failure (the error's repr in its message, its traceback in its data)
    logged = _failure_logged(wrapped)

    # Then both name the database error by its first line, not the value
    assert f"raised unexpected: RuntimeError(IntegrityError('{FIRST}'))" in logged.replace('\\"', '"'), logged
    assert marker not in logged and "DETAIL" not in logged, logged


@pytest.mark.parametrize("json", [True, False], ids=["json", "text"])
def test_an_error_whose_text_escapes_a_database_error_s_carries_no_detail(db: Any, json: bool) -> None:
    # Given errors raised while handling one PostgreSQL raised quoting a client's value, whose
    # text writes their argument's repr, the error's line breaks as `\n`: a KeyError of its text,
    # of its repr, an error of two arguments, one of the error's args (the first line's own line
    # break stays, written as `\n`), and those written within another repr
    marker, error = _unique_violation()

    for make, line in [
        (lambda exc: KeyError(f"job 7: {exc}"), f"KeyError: 'job 7: {FIRST}"),
        (lambda exc: KeyError(f"{exc!r}"), f"KeyError: 'IntegrityError(\\'{FIRST}\\')'"),
        (lambda exc: RuntimeError("recording failed", f"{exc}"), f"RuntimeError: ('recording failed', '{FIRST}"),
        (lambda exc: ValueError(f"save failed: {exc.args}"), f"ValueError: save failed: ('{FIRST}"),
        # (escaped twice: a repr's text in a KeyError's, or in a tuple's repr of its args)
        (lambda exc: KeyError(f"{exc.args}"), "KeyError: "),
        (lambda exc: KeyError(f"{exc.__cause__!r}"), "KeyError: "),
        (lambda exc: RuntimeError("recording failed", f"{exc.args}"), "RuntimeError: ('recording failed', "),
    ]:
        raised = _raised_handling(error, make)

        # When a service logs it with its traceback, in either format
        logged = _traceback_written(json, raised)

        # Then its line writes the database error's first line (before, its whole text escaped:
        # the DETAIL, the value with it)
        # (JSON escapes the quotes; both formats write the backslashes of a repr doubled)
        written = (logged.replace('\\"', '"') if json else logged).replace("\\\\", "\\")
        assert line in written and marker not in logged and "DETAIL" not in logged, logged


def _noted(error: Exception, note: str) -> Exception:
    error.add_note(note)
    return error


@pytest.mark.parametrize("json", [True, False], ids=["json", "text"])
def test_an_error_s_note_or_psycopg2_s_repr_of_a_database_error_carries_no_detail(db: Any, json: bool) -> None:
    # Given errors raised while handling one PostgreSQL raised quoting a client's value: one with
    # a note of its text, one quoting psycopg2's error it was raised from (its repr)
    marker, error = _unique_violation()

    for make, line in [
        (lambda exc: _noted(ValueError("save failed"), f"while saving: {exc}"), f"while saving: {FIRST}"),
        (lambda exc: ValueError(f"save failed: {exc.__cause__!r}"), f"ValueError: save failed: UniqueViolation('{FIRST}"),
    ]:
        raised = _raised_handling(error, make)

        # When a service logs it with its traceback, in either format
        logged = _traceback_written(json, raised)

        # Then its note and its line write the database error's first line (before, its whole
        # text: the DETAIL, the value with it); the exception raised keeps its note
        written = logged.replace('\\"', '"') if json else logged
        assert line in written and marker not in logged and "DETAIL" not in logged, logged
        assert marker in "".join(traceback.format_exception(raised))


class _Coded(Exception):
    """An error compared by a code of its own, which None has not."""

    def __eq__(self, other: object) -> bool:
        return self.args[0] == other.args[0]  # type: ignore[attr-defined]

    __hash__ = Exception.__hash__


@pytest.mark.parametrize("json", [True, False], ids=["json", "text"])
def test_a_chain_through_an_error_compared_by_its_own_eq_carries_no_detail(db: Any, json: bool) -> None:
    # Given an error raised while handling one compared by its own __eq__ (AttributeError against
    # None), itself raised while handling one PostgreSQL raised quoting a client's value
    marker, error = _unique_violation()

    def raise_() -> None:
        try:
            try:
                raise error
            except DatabaseError:
                raise _Coded("E42") from None
        except _Coded as exc:
            raise RuntimeError("recording failed") from exc

    raised = _raised(raise_)

    # When a service logs it with its traceback
    logged = _traceback_written(json, raised)

    # Then the line is written (the filter's look at its links raised: the line was lost), and
    # not the value
    assert "_Coded: E42" in logged and "RuntimeError: recording failed" in logged, logged
    assert marker not in logged and "DETAIL" not in logged, logged
