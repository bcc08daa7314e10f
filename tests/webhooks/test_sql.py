"""webhooks/sql.py: an event and its deliveries inserted in one statement are what saves write."""
from __future__ import annotations

import uuid

import pytest
from django.utils import timezone

from core.services import client_create
from webhooks import sql
from webhooks.models import Delivery, Event

pytestmark = pytest.mark.django_db


def test_an_event_and_its_deliveries_are_written_as_saves_would() -> None:
    owner = client_create(name="sql-outbox")
    now = timezone.now()
    event = Event(owner=owner, subject_id=uuid.uuid4(), event_type="job.succeeded", body=b'{"a":"\xc3\xa9"}', created_at=now)
    deliveries = [
        Delivery(owner=owner, subject_id=event.subject_id, url=f"https://example.com/{n}", created_at=now)
        for n in range(2)
    ]

    sql.event_insert_with_deliveries(event, deliveries)

    stored = list(Delivery.objects.select_related("event").filter(event_id=event.pk).order_by("pk"))
    assert [d.pk for d in stored] == [d.pk for d in deliveries] and event.pk is not None
    assert [d.url for d in stored] == ["https://example.com/0", "https://example.com/1"]
    assert bytes(stored[0].event.body) == b'{"a":"\xc3\xa9"}' and stored[0].event.message_id.startswith("msg_")
    assert {(d.state, d.attempt_count, d.redelivery) for d in stored} == {(Delivery.State.PENDING, 0, False)}
    assert all(d.event is event for d in deliveries)
