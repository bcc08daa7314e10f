"""The SQL helpers in core/db.py: what they write and read back is what the ORM would."""
from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from core.db import insert_with_parent, select_one, update_one_returning, update_returning
from core.services import client_create
from jobs.models import Job
from webhooks.models import Delivery, Event

pytestmark = pytest.mark.django_db


def test_insert_with_parent_writes_both_rows_as_saves_would() -> None:
    # Given an unsaved event and a delivery pointing at it
    owner = client_create(name="db-helpers")
    now = timezone.now()
    event = Event(owner=owner, subject_id=uuid.uuid4(), event_type="job.succeeded", body=b'{"a":"\xc3\xa9"}', created_at=now)
    delivery = Delivery(event=event, owner=owner, subject_id=event.subject_id, url="https://example.com/h", created_at=now)

    # When both are inserted in one statement
    insert_with_parent(delivery, parent=event, link="event")

    # Then both have their keys, and the rows read back hold every value, defaults included
    stored = Delivery.objects.select_related("event").get(pk=delivery.pk)
    assert stored.event_id == event.pk and event.pk is not None
    assert bytes(stored.event.body) == b'{"a":"\xc3\xa9"}'
    assert stored.event.message_id == event.message_id and stored.event.message_id.startswith("msg_")
    assert (stored.state, stored.attempt_count, stored.redelivery) == (Delivery.State.PENDING, 0, False)
    assert stored.created_at == now and stored.url == "https://example.com/h"
    assert delivery.event is event and not delivery._state.adding


def test_update_returning_returns_the_updated_rows_with_converted_values() -> None:
    # Given a pending job with a JSON payload
    owner = client_create(name="db-helpers")
    job = Job.objects.create(owner=owner, job_name="api.tasks.hello_world", payload={"message": "é", "n": [1]})
    started = timezone.now() - timedelta(seconds=1)

    # When it is started in one statement, and a second update matches nothing
    [updated] = update_returning(Job.objects.filter(pk=job.pk, status=Job.Status.PENDING), status=Job.Status.STARTED, started_at=started)
    again = update_returning(Job.objects.filter(pk=job.pk, status=Job.Status.PENDING), status=Job.Status.STARTED)

    # Then the row comes back as the ORM reads it: the new values, JSON decoded, UUIDs and aware datetimes
    assert again == []
    assert (updated.pk, updated.status, updated.started_at) == (job.pk, Job.Status.STARTED, started)
    assert updated.payload == {"message": "é", "n": [1]}
    assert updated.owner_id == owner.id and isinstance(updated.owner_id, uuid.UUID)
    assert updated.created_at == Job.objects.get(pk=job.pk).created_at


def test_update_one_returning_writes_and_reads_back_as_the_orm_would() -> None:
    # Given a started job
    owner = client_create(name="db-helpers")
    job = Job.objects.create(owner=owner, job_name="api.tasks.hello_world", status=Job.Status.STARTED)
    finished = timezone.now()
    not_final = "status NOT IN (%s, %s)"

    # When it is finished with a JSON result, by key and condition, and then again
    updated = update_one_returning(
        Job, pk=job.pk, condition=not_final, params=[Job.Status.SUCCESS, Job.Status.FAILURE],
        status=Job.Status.SUCCESS, finished_at=finished, result={"text": "é", "n": [1, None]},
    )
    again = update_one_returning(
        Job, pk=job.pk, condition=not_final, params=[Job.Status.SUCCESS, Job.Status.FAILURE],
        status=Job.Status.FAILURE,
    )

    # Then the first comes back as stored, and the second matched nothing and changed nothing
    assert again is None
    stored = Job.objects.get(pk=job.pk)
    assert updated is not None and not updated._state.adding
    assert (updated.status, updated.finished_at, updated.result) == (Job.Status.SUCCESS, finished, {"text": "é", "n": [1, None]})
    assert (stored.status, stored.finished_at, stored.result) == (updated.status, updated.finished_at, updated.result)
    assert updated.created_at == stored.created_at and updated.owner_id == owner.id


def test_select_one_reads_what_select_related_would(django_assert_num_queries: Any) -> None:
    # Given a delivery of an event, and what the ORM reads for it
    owner = client_create(name="db-helpers")
    event = Event.objects.create(owner=owner, subject_id=uuid.uuid4(), event_type="job.failed", body=b'{"x":1}')
    delivery = Delivery.objects.create(event=event, owner=owner, subject_id=event.subject_id, url="https://example.com/h")
    expected = Delivery.objects.select_related("event").get(pk=delivery.pk)

    # When it is selected with its event, in one query, the event included
    with django_assert_num_queries(1):
        found = select_one(
            Delivery, link="event", where="t.id = %s AND parent.event_type = %s",
            params=[delivery.pk, "job.failed"],
        )
        assert found is not None
        found_event = found.event

    # Then both hold what the ORM gives, converted (times aware, bytes as bytes), and saved
    assert {f.attname: getattr(found, f.attname) for f in Delivery._meta.concrete_fields} == {
        f.attname: getattr(expected, f.attname) for f in Delivery._meta.concrete_fields
    }
    assert bytes(found_event.body) == b'{"x":1}' and found_event.created_at.tzinfo is not None
    assert found_event.message_id == expected.event.message_id
    assert not found._state.adding and not found_event._state.adding
    # And nothing matching is None
    assert select_one(
        Delivery, link="event", where="t.id = %s AND parent.event_type = %s", params=[delivery.pk, "job.started"]
    ) is None
