"""A task the database failed, through a worker logging JSON as production runs it: one WARNING a
retry and, once its retries have run out, Celery's ERROR, each with the error's first line only:
PostgreSQL's DETAIL quotes the values it refused, a client's data."""
from __future__ import annotations

import io
import json
import logging
import logging.config
import pickle
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from billiard.einfo import ExceptionInfo
from celery import states
from celery.app.task import Context
from celery.app.trace import TraceInfo
from celery.contrib.testing.mocks import TaskMessage
from celery.exceptions import Retry
from celery.signals import task_retry
from celery.worker.request import Request
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from core import logs
from core.services import client_create
from jobs import dispatch
from jobs.models import Job
from tests.core.test_logs import _json_worker, _lines
from webhooks import dispatch as webhook_dispatch
from webhooks import outbox
from webhooks.models import Delivery
from webhooks.tasks import deliveries_attempt

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


@pytest.fixture
def refusing() -> Iterator[Any]:
    """`refuse(table, row_id, times)`: PostgreSQL refuses the row's next `times` updates (every
    one, for None) with a DataError whose first line names a token and whose DETAIL quotes a
    marker, as a refused value's does; the token and the marker are returned."""
    made: list[str] = []

    def refuse(table: str, row_id: object, times: int | None, *, cast: bool = False) -> tuple[str, str]:
        name = f"test_refused_{len(made)}"
        token, marker = f"refused-{uuid.uuid4().hex[:8]}", f"client-secret-{uuid.uuid4().hex}"
        limit = "TRUE" if times is None else f"nextval('{name}') <= {times}"
        # cast: the marker is refused as an integer, which the error's first line quotes
        refusal = (f"PERFORM '{marker}'::integer" if cast else
                   f"RAISE EXCEPTION '{token}' USING ERRCODE = '22000', DETAIL = 'Key (value)=({marker}).'")
        with connection.cursor() as cursor:
            cursor.execute(f"CREATE SEQUENCE {name}")
            cursor.execute(f"""
                CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN
                    IF {limit} THEN
                        {refusal};
                    END IF;
                    RETURN NEW;
                END $$
            """)
            cursor.execute(f"CREATE TRIGGER {name} BEFORE UPDATE ON {table} FOR EACH ROW "
                           f"WHEN (OLD.id = '{row_id}') EXECUTE FUNCTION {name}()")
        made.append(table)
        return token, marker

    yield refuse
    with connection.cursor() as cursor:
        for index, table in enumerate(made):
            cursor.execute(f"DROP TRIGGER IF EXISTS test_refused_{index} ON {table}")
            cursor.execute(f"DROP FUNCTION IF EXISTS test_refused_{index}()")
            cursor.execute(f"DROP SEQUENCE IF EXISTS test_refused_{index}")


def _wait_for(log: Path, text: str, count: int) -> None:
    deadline = time.monotonic() + 60
    while log.read_text().count(text) < count:
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.2)
    time.sleep(0.5)  # the line's end


def _delivery(owner: Any) -> int:
    """A due delivery that the dispatcher takes for one a task carries already."""
    outbox.event_record(owner_id=owner.pk, subject_id=uuid.uuid4(), event_type="job.succeeded",
                        data={"id": "x"}, callback_url="http://127.0.0.1:9/", publish=False)
    delivery = Delivery.objects.get(owner=owner)
    Delivery.objects.filter(pk=delivery.pk).update(dispatched_at=timezone.now())
    return delivery.pk


def test_a_task_whose_retries_ran_out_on_a_database_error_logs_its_first_line_only(
    transactional_db: Any, refusing: Any, tmp_path: Path
) -> None:
    # Given a job and a delivery whose every update PostgreSQL refuses, quoting a client's value
    owner = client_create(name=f"refused-{uuid.uuid4().hex[:6]}")
    job = Job.objects.create(owner=owner, job_name="api.tasks.hello_world", payload={"message": "x"},
                             dispatched_at=timezone.now())
    delivery_id = _delivery(owner)
    job_token, job_marker = refusing("jobs_job", job.pk, None)
    delivery_token, delivery_marker = refusing("webhooks_delivery", delivery_id, None)

    # When the job's first step and the delivery's attempt run on their last retry
    log = tmp_path / "worker.log"
    with _json_worker("refused", "WARNING", log, queues="jobs,webhooks") as (_, app, _):
        app.send_task(dispatch.RUN_STEP_TASK, kwargs=dispatch.job_signatures(job=job)[0].kwargs, queue="jobs",
                      retries=25)
        app.send_task(webhook_dispatch.ATTEMPT_TASK, kwargs={"delivery_ids": [delivery_id]}, queue="webhooks", retries=5)
        _wait_for(log, "raised unexpected", 2)

    # Then Celery's ERROR for each says which error, where, and its first line, and no line
    # quotes the client's values
    text = log.read_text()
    assert job_marker not in text and delivery_marker not in text, text
    for token in (job_token, delivery_token):
        [line] = [line for line in _lines(log) if token in line["message"]]
        assert line["level"] == "error" and line["logger"] == "celery.app.trace", line
        assert line["message"].endswith(f"raised unexpected: DataError('{token}')"), line
        assert 'File "' in line["exception"], line
        assert line["exception"].rstrip().endswith(f"django.db.utils.DataError: {token}"), line


def test_a_delivery_the_database_failed_logs_a_warning_a_retry(
    transactional_db: Any, refusing: Any, tmp_path: Path
) -> None:
    # Given a delivery whose next two updates PostgreSQL refuses, quoting a client's value
    delivery_id = _delivery(client_create(name=f"refused-{uuid.uuid4().hex[:6]}"))
    token, marker = refusing("webhooks_delivery", delivery_id, 2)

    # When a task sends its attempt, retried on the DataError
    log = tmp_path / "worker.log"
    with _json_worker("retried", "WARNING", log, queues="webhooks") as (_, app, _):
        app.send_task(webhook_dispatch.ATTEMPT_TASK, kwargs={"delivery_ids": [delivery_id]}, queue="webhooks")
        _wait_for(log, "retry 2 of 5", 1)
        deadline = time.monotonic() + 30
        while not Delivery.objects.filter(pk=delivery_id, attempt_count__gt=0).exists():  # its third run sent it
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)

    # Then the worker wrote one WARNING a retry, naming the task and the error's first line,
    # and no line quotes the client's value
    assert marker not in log.read_text()
    retries = [line for line in _lines(log) if token in line["message"]]
    assert [(line["level"], line["message"].split(" (retry")[1]) for line in retries] == [
        ("warning", " 1 of 5)"), ("warning", " 2 of 5)")
    ], retries
    assert retries[0]["message"].startswith(f"Task {webhook_dispatch.ATTEMPT_TASK}: the database failed ({token}); "), retries


def test_a_task_refused_a_value_its_error_s_first_line_quotes_logs_it_redacted(
    transactional_db: Any, refusing: Any, tmp_path: Path
) -> None:
    # Given a delivery whose every update PostgreSQL refuses casting a client's value to an
    # integer: invalid input syntax for type integer: "<the value>"
    delivery_id = _delivery(client_create(name=f"refused-{uuid.uuid4().hex[:6]}"))
    _, marker = refusing("webhooks_delivery", delivery_id, None, cast=True)

    # When an attempt runs, retried, and another runs its last retry
    log = tmp_path / "worker.log"
    with _json_worker("quoted", "WARNING", log, queues="webhooks") as (_, app, _):
        for retries in (0, 5):
            app.send_task(webhook_dispatch.ATTEMPT_TASK, kwargs={"delivery_ids": [delivery_id]}, queue="webhooks",
                          retries=retries)
        _wait_for(log, "retry 1 of 5", 1)
        _wait_for(log, "raised unexpected", 1)

    # Then the retry's WARNING and Celery's ERROR name the type, and no line quotes the value
    assert marker not in log.read_text(), log.read_text()
    quoted = 'invalid input syntax for type integer: "…"'
    retry = next(line for line in _lines(log) if "retry 1 of 5" in line["message"])
    [failed] = [line for line in _lines(log) if "raised unexpected" in line["message"]]
    assert f"the database failed ({quoted}); " in retry["message"], retry
    assert failed["message"].endswith(f"raised unexpected: DataError('{quoted}')"), failed
    assert failed["exception"].rstrip().endswith(f"django.db.utils.DataError: {quoted}"), failed


def test_a_data_exception_s_first_line_keeps_the_names_and_not_the_value(db: Any) -> None:
    value, digits = uuid.uuid4().hex, str(uuid.uuid4().int)
    with connection.cursor() as cursor:
        cursor.execute("""CREATE TYPE pg_temp."Mood" AS ENUM ('calm')""")
    for sql, marker, first in [
        (f"SELECT '{value}'::integer", value, 'invalid input syntax for type integer: "…"'),
        (f"""SELECT 'calm'::pg_temp."Mood" = '{value}'""", value, 'invalid input value for enum "Mood": "…"'),
        # a quote and a line break of its own: the value is still cut whole
        (f"""SELECT 'x"{value}\n"'::uuid""", value, 'invalid input syntax for type uuid: "…"'),
        (f"SELECT '{digits}'::integer", digits, 'value "…" is out of range for type integer'),
        (f"SELECT now() AT TIME ZONE '{value}'", value, 'time zone "…" not recognized'),
        # the input's bytes, written in hex, and the encodings named in quotes around them
        ("SELECT convert_from('\\x41e9'::bytea, 'UTF8')", "0xe9", 'invalid byte sequence for encoding "UTF8": …'),
        ("SELECT convert('\\xe282ac'::bytea, 'UTF8', 'LATIN1')", "0xe2",
         'character with byte sequence … in encoding "UTF8" has no equivalent in encoding "LATIN1"'),
    ]:
        logged = _failure_logged(_database_error(sql))
        message = json.loads(logged.split("\n", 1)[0])["message"]
        assert message.endswith(f"raised unexpected: DataError('{first}')") and marker not in logged, logged


class _TwoArgumentsError(DatabaseError):
    def __init__(self, key: str, value: str) -> None:
        super().__init__(key, value)


class _UnprintableError(DatabaseError):
    def __str__(self) -> str:
        raise RuntimeError("no text")


def _failure_logged(error: Exception) -> str:
    """What Celery's trace writes, through the JSON format, for a task that raised `error` and
    failed for good, and every value it handed its record."""
    records: list[logging.LogRecord] = []
    handler = logging.StreamHandler(io.StringIO())
    handler.setFormatter(logging.config.dictConfigClass({}).configure_formatter(
        logs.logging_config(level="WARNING", json=True)["formatters"]["structured"]))
    handler.addFilter(lambda record: records.append(record) or True)
    trace_logger = logging.getLogger("celery.app.trace")
    trace_logger.addHandler(handler)
    task = deliveries_attempt
    try:
        try:
            raise error
        except Exception:  # noqa: BLE001 - the task's error, whichever
            TraceInfo(states.FAILURE, error).handle_failure(task, Context(id="t", hostname="h"), store_errors=False)
    finally:
        trace_logger.removeHandler(handler)
    [record] = records
    return handler.stream.getvalue() + repr(vars(record))


def _unique_violation() -> tuple[str, DatabaseError]:
    """A value, and PostgreSQL's error for a second row of it where it is unique: its DETAIL
    quotes the value, as a client's would be."""
    marker = f"client-secret-{uuid.uuid4().hex}"
    with connection.cursor() as cursor:
        cursor.execute("CREATE TEMPORARY TABLE refused (value text UNIQUE)")
        cursor.execute("INSERT INTO refused VALUES (%s)", [marker])
    return marker, _database_error(f"INSERT INTO refused VALUES ('{marker}')")


def _database_error(sql: str) -> DatabaseError:
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(sql)
    except DatabaseError as exc:
        return exc
    raise AssertionError(sql)


def test_celery_s_error_for_any_database_error_carries_no_detail(db: Any) -> None:
    marker, unique = _unique_violation()
    try:
        raise DatabaseError("refused") from ValueError(marker)
    except DatabaseError as exc:
        caused = exc
    for error, first in [
        (unique, "IntegrityError('duplicate key value violates unique constraint"),
        (_database_error("DO $$ BEGIN RAISE EXCEPTION 'shut down' USING ERRCODE = '57P01'; END $$"),
         "OperationalError('shut down')"),
        (_TwoArgumentsError("a key", marker), "DatabaseError('_TwoArgumentsError')"),
        (_UnprintableError(marker), "DatabaseError('_UnprintableError')"),
        (DatabaseError(), "DatabaseError('DatabaseError')"),
        (caused, "DatabaseError('refused')"),
    ]:
        logged = _failure_logged(error)
        assert f"raised unexpected: {first}" in logged and marker not in logged, logged


def test_a_service_s_own_traceback_of_a_database_error_carries_no_detail(db: Any) -> None:
    # Given an error PostgreSQL raised quoting a client's value (a delivery's outcome it refused)
    marker, error = _unique_violation()

    # When a service logs it with its traceback, as webhooks/recording.py does, through the
    # handler LOGGING configured
    [handler] = [handler for handler in logging.getLogger().handlers if handler.name == "console"]
    stream = handler.setStream(io.StringIO())
    try:
        try:
            raise error
        except DatabaseError:
            logging.getLogger("webhooks.recording").exception("Delivery 1: its attempt's outcome could not be recorded")
    finally:
        logged = handler.setStream(stream).getvalue()

    # Then the line ends in the error's first line, without the value
    assert "IntegrityError: duplicate key value violates unique constraint" in logged and marker not in logged, logged


def test_celery_s_error_for_a_task_handler_that_raised_a_database_error_carries_no_value(db: Any) -> None:
    marker, unique = _unique_violation()
    quoted = _database_error(f"SELECT '{marker}'::integer")
    for error, first in [
        (unique, "IntegrityError('duplicate key value violates unique constraint"),
        (quoted, """DataError('invalid input syntax for type integer: "…"')"""),
    ]:
        # Given an error PostgreSQL raised quoting a client's value, come back from a pool
        # process as Celery's ExceptionInfo (pickled, PostgreSQL's own error no longer its cause)
        try:
            raise error
        except DatabaseError:
            failure = pickle.loads(pickle.dumps(ExceptionInfo()))

        # When the worker's handling of the task's failure logs it ("Task handler raised error:
        # %r", celery.worker.request), through the handler LOGGING configured
        [handler] = [handler for handler in logging.getLogger().handlers if handler.name == "console"]
        stream = handler.setStream(io.StringIO())
        request = Request(TaskMessage(deliveries_attempt.name, id="t", kwargs={"delivery_ids": [1]}),
                          app=deliveries_attempt.app, task=deliveries_attempt)
        try:
            request.on_failure(failure)
        finally:
            logged = handler.setStream(stream).getvalue()

        # Then its message names the error by its first line, without the value
        assert f"Task handler raised error: {first}" in logged and marker not in logged, logged


def test_a_retry_on_a_database_error_whose_text_raises_is_logged_by_its_type(db: Any) -> None:
    # Given a database error whose own __str__ raises (a subclass's, or an argument's)
    error = _UnprintableError("client-secret")

    # When a task it failed is retried, through the handler LOGGING configured
    [handler] = [handler for handler in logging.getLogger().handlers if handler.name == "console"]
    stream = handler.setStream(io.StringIO())
    try:
        task_retry.send(sender=deliveries_attempt, request=Context(id="t", kwargs={}, retries=0),
                        reason=Retry(exc=error, when=5))
    finally:
        logged = handler.setStream(stream).getvalue()

    # Then the retry's WARNING names the error by its type; before, first_line raised in the
    # signal's receiver and the line was Celery's ERROR "Signal handler ... raised" instead
    assert f"Task {deliveries_attempt.name}: the database failed (_UnprintableError); it runs again in 5 s" in logged, logged
    assert "Signal handler" not in logged, logged


def test_a_database_error_among_a_line_s_named_arguments_carries_no_detail(db: Any) -> None:
    # Given an error PostgreSQL raised quoting a client's value
    marker, error = _unique_violation()

    # When a line names it among a mapping's values (`%(error)s`), through the handler LOGGING configured
    [handler] = [handler for handler in logging.getLogger().handlers if handler.name == "console"]
    stream = handler.setStream(io.StringIO())
    try:
        logging.getLogger("webhooks.recording").warning("Delivery %(id)s not recorded: %(error)s", {"id": 7, "error": error})
    finally:
        logged = handler.setStream(stream).getvalue()

    # Then the line has its first line, the other values as they were, and not the value
    assert 'Delivery 7 not recorded: duplicate key value violates unique constraint "refused_value_key"' in logged, logged
    assert marker not in logged and "DETAIL" not in logged, logged


def test_a_database_error_in_a_line_s_list_or_tuple_argument_carries_no_detail(db: Any) -> None:
    # Given an error PostgreSQL raised quoting a client's value
    marker, error = _unique_violation()

    # When lines name it inside a list and a tuple (written with each item's repr), through the
    # handler LOGGING configured
    [handler] = [handler for handler in logging.getLogger().handlers if handler.name == "console"]
    stream = handler.setStream(io.StringIO())
    try:
        logging.getLogger("webhooks.recording").warning("Deliveries %s not recorded: %s", [7, 8], [error, "other"])
        logging.getLogger("webhooks.recording").warning("Delivery 9 not recorded: %s", (error,))
    finally:
        logged = handler.setStream(stream).getvalue()

    # Then each line has the error's first line, the other items as they were, and not the value
    # (before, the error's whole text: its DETAIL, the value with it)
    first = "IntegrityError('duplicate key value violates unique constraint \"refused_value_key\"')"
    assert f"Deliveries [7, 8] not recorded: [{first}, 'other']" in logged, logged
    assert f"Delivery 9 not recorded: ({first},)" in logged, logged
    assert marker not in logged and "DETAIL" not in logged, logged
