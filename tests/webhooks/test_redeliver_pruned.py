"""Sending an event again (a job's redelivery, an endpoint's recovery) as the housekeeping prunes
it (past WEBHOOK_EVENT_RETENTION_DAYS): one goes first, the other finds the event kept or gone.
Before, one read the event, the other deleted or added to it, and it failed at commit on a
foreign key: the client's 500, or the prune's batch undone with the rest of its run."""
from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from core.errors import Conflict
from core.models import Client
from core.services import client_create
from tests.locks import meanwhile
from webhooks import outbox
from webhooks.endpoints import endpoint_recover
from webhooks.models import Delivery, Endpoint, Event

pytestmark = pytest.mark.django_db(transaction=True)

CALLBACK = "http://127.0.0.1:9/hook"


def _delivered_31_days_ago(owner: Client) -> Event:
    """A job's final event of `owner`'s, delivered to its callback 31 days ago."""
    at = timezone.now() - timedelta(days=31)
    event = Event.objects.create(owner=owner, subject_id=uuid.uuid4(), event_type="job.succeeded",
                                 body=b"{}", created_at=at)
    Delivery.objects.create(event=event, owner=owner, subject_id=event.subject_id, url=CALLBACK,
                            state=Delivery.State.SUCCEEDED, created_at=at, next_attempt_at=at)
    return event


def test_a_redelivery_of_an_event_pruned_meanwhile_is_nothing_to_redeliver(settings: Any) -> None:
    # Given a job's final event delivered to its callback 31 days ago, past its retention of 30
    settings.WEBHOOK_EVENT_RETENTION_DAYS = 30
    owner = client_create(name=f"redeliver-pruned-{uuid.uuid4().hex[:8]}")
    event = _delivered_31_days_ago(owner)

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


def test_a_redelivery_made_as_the_prune_deletes_its_event_fails_neither() -> None:
    # Given a job's final event delivered to its callback 31 days ago, past its retention of 30
    owner = client_create(name=f"prune-meets-redeliver-{uuid.uuid4().hex[:8]}")
    event = _delivered_31_days_ago(owner)

    def redelivered() -> str:
        try:
            outbox.delivery_redeliver(owner_id=owner.pk, subject_id=event.subject_id,
                                      event_types=["job.succeeded"], callback_url=CALLBACK)
        except Conflict as refused:
            return refused.code
        return "redelivered"

    # When the client redelivers it once the prune has read the event and its deliveries, just
    # before it deletes them
    with meanwhile(redelivered, at='DELETE FROM "webhooks_deliveryattempt"') as redelivery:
        pruned = outbox.events_prune(older_than=timezone.now() - timedelta(days=30))

    # Then the prune went through (before, it failed at commit on the new delivery's foreign key,
    # the batch undone and the rest of the run with it), and the redelivery, which waited for it,
    # was told there is nothing left to redeliver; no delivery is left without its event
    assert pruned == 1
    assert redelivery == ["nothing_to_redeliver"]
    assert not Event.objects.filter(owner=owner).exists()
    assert not Delivery.objects.filter(owner=owner).exists()


def test_an_endpoints_recovery_made_as_the_prune_deletes_its_event_keeps_the_event() -> None:
    # Given an endpoint (disabled: what it recovers waits for it) whose delivery of an event of
    # 31 days ago, past its retention of 30, failed
    owner = client_create(name=f"prune-meets-recover-{uuid.uuid4().hex[:8]}")
    endpoint = Endpoint.objects.create(owner=owner, url=CALLBACK, enabled=False,
                                       disabled_reason=Endpoint.DisabledReason.FAILING)
    at = timezone.now() - timedelta(days=31)
    event = Event.objects.create(owner=owner, subject_id=uuid.uuid4(), event_type="job.succeeded",
                                 body=b"{}", created_at=at)
    Delivery.objects.create(event=event, owner=owner, subject_id=event.subject_id, endpoint=endpoint, url=CALLBACK,
                            state=Delivery.State.FAILED, created_at=at, next_attempt_at=at)

    def pruned() -> int:
        return outbox.events_prune(older_than=timezone.now() - timedelta(days=30))

    # When the prune runs as the client's recovery of the endpoint adds the event's new delivery
    with meanwhile(pruned, at='INSERT INTO "webhooks_delivery"') as prune:
        recovered = endpoint_recover(owner_id=owner.pk, endpoint_id=endpoint.pk, since=at - timedelta(days=1))

    # Then the recovery went through (before, the prune deleted the event it had read, and its
    # new delivery failed at commit on its foreign key: a 500), and the prune left the event,
    # which has a delivery to make again
    assert recovered == 1
    assert prune == [0]
    assert Delivery.objects.filter(event=event, state=Delivery.State.ENDPOINT_DISABLED).exists()
