"""core/db.py: a row read back through `model_from_row` is what the ORM reads. The one helper
that reaches below Django's documented API (`converters_of`) is held to the ORM here, so
a Django upgrade that changes it fails this test (SQLite's path runs under tests/core/test_make_run.py)."""
from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.db import OperationalError, connection
from django.utils import timezone

from core.db import (
    columns_of,
    delete_in_batches,
    model_from_row,
    reads_bounded,
    timed_out,
)
from core.services import client_create
from jobs.models import Job
from webhooks.models import Event

pytestmark = pytest.mark.django_db


def _fields(instance: Any) -> dict[str, Any]:
    return {f.attname: getattr(instance, f.attname) for f in type(instance)._meta.concrete_fields}


@pytest.mark.parametrize("model", [Job, Event])
def test_a_row_read_by_hand_is_what_the_orm_reads(model: type[Any]) -> None:
    # Given a row with JSON, UUIDs, bytes and aware datetimes
    owner = client_create(name=f"db-{model.__name__}")
    if model is Job:
        stored = Job.objects.create(owner=owner, job_name="api.tasks.hello_world", payload={"message": "é", "n": [1]},
                                    result={"a": None}, started_at=timezone.now())
    else:
        stored = Event.objects.create(owner=owner, subject_id=uuid.uuid4(), event_type="job.failed", body=b'{"x":1}')
    expected = model.objects.get(pk=stored.pk)

    # When it is selected by hand and read back
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {columns_of(model)} FROM {model._meta.db_table} WHERE id = %s", [stored.pk])
        found = model_from_row(model, cursor.fetchone())

    # Then it holds what the ORM gives, converted, and is marked saved
    assert {k: bytes(v) if isinstance(v, memoryview) else v for k, v in _fields(found).items()} == {
        k: bytes(v) if isinstance(v, memoryview) else v for k, v in _fields(expected).items()
    }
    assert not found._state.adding and found._state.db == "default"


def test_delete_in_batches_stops_at_its_cap_and_counts_the_model_rows() -> None:
    owner = client_create(name="db-delete")
    for _ in range(5):
        Job.objects.create(owner=owner, job_name="x", status=Job.Status.SUCCESS)

    first = delete_in_batches(Job.objects.filter(owner=owner), batch_size=2, max_batches=2)
    rest = delete_in_batches(Job.objects.filter(owner=owner), batch_size=2, max_batches=5)

    assert (first, rest) == (4, 1)


def _bounds() -> tuple[str, str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_setting('statement_timeout'), current_setting('lock_timeout')")
        return cursor.fetchone()


def test_reads_bounded_ends_a_long_read_and_leaves_the_connection_as_it_was() -> None:
    # Given the connection's own bounds (none)
    before = _bounds()

    # When a read runs past the bound, and another block's reads finish in time
    with (pytest.raises(OperationalError) as ended, reads_bounded(seconds=0.1, lock_wait_seconds=0.05),
          connection.cursor() as cursor):
        cursor.execute("SELECT pg_sleep(2)")
    with reads_bounded(seconds=0.1, lock_wait_seconds=0.05):
        within = _bounds()

    # Then PostgreSQL ended the first, as timed_out tells, and the bounds held only inside
    assert timed_out(ended.value)
    assert within == ("100ms", "50ms") and _bounds() == before == ("0", "0")
