"""Redelivering a job's final event that the housekeeping prunes (past
WEBHOOK_EVENT_RETENTION_DAYS) as the redelivery is made: the client is told there is nothing to
redeliver, as it is once the event is gone. Before, the redelivery read the event, the prune
deleted it, and the redelivery's new delivery of it failed at commit on its foreign key: a 500."""
from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from core.errors import Conflict
from core.services import client_create
from tests.locks import meanwhile
from webhooks import outbox
from webhooks.models import Delivery, Event

pytestmark = pytest.mark.django_db(transaction=True)

CALLBACK = "http://127.0.0.1:9/hook"


def test_a_redelivery_of_an_event_pruned_meanwhile_is_nothing_to_redeliver(settings: Any) -> None:
    # Given a job's final event delivered to its callback 31 days ago, past its retention of 30
    settings.WEBHOOK_EVENT_RETENTION_DAYS = 30
    owner = client_create(name=f"redeliver-pruned-{uuid.uuid4().hex[:8]}")
    at = timezone.now() - timedelta(days=31)
    event = Event.objects.create(owner=owner, subject_id=uuid.uuid4(), event_type="job.succeeded",
                                 body=b"{}", created_at=at)
    Delivery.objects.create(event=event, owner=owner, subject_id=event.subject_id, url=CALLBACK,
                            state=Delivery.State.SUCCEEDED, created_at=at, next_attempt_at=at)

    def pruned() -> int:
        return outbox.events_prune(older_than=timezone.now() - timedelta(days=30))

    # When the client redelivers it, and the prune deletes it once the redelivery has found it
    with meanwhile(pruned, at='SELECT "webhooks_event"', after=True) as prune, \
            pytest.raises(Conflict) as refused:
        outbox.delivery_redeliver(owner_id=owner.pk, subject_id=event.subject_id,
                                  event_types=["job.succeeded"], callback_url=CALLBACK)

    # Then the event went, and the client is told there is nothing to redeliver (a 409), no
    # delivery made
    assert prune == [1]
    assert refused.value.code == "nothing_to_redeliver"
    assert not Delivery.objects.filter(owner=owner).exists()
