"""A job's event recorded for an endpoint does not wait for a change to the endpoint under way
(its client's PATCH, a recover, a rescheduling batch): each locks the endpoint's row as one that
keeps its key (FOR NO KEY UPDATE), which the event's delivery, holding the endpoint FOR KEY SHARE
(webhooks/sql.py), does not wait for. Locked FOR UPDATE, every event of the endpoint's client
(whose transitions take their event ids under one lock of the owner's, jobs/event_log.py) waited
for the change to commit: a recover of 1,000 failures held them all for its whole transaction."""
from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection, transaction
from django.utils import timezone

from core.models import Client
from core.services import client_create
from webhooks import endpoints, outbox, reschedule
from webhooks.models import Delivery, Endpoint, Event

pytestmark = pytest.mark.django_db(transaction=True)

RECEIVER = "http://127.0.0.1:9/hooks"


@pytest.fixture
def owner() -> Client:
    return client_create(name=f"endpoint-locks-{uuid.uuid4().hex[:8]}")


def _failed_delivery(owner: Client, endpoint: Endpoint) -> None:
    """A delivery to the endpoint that failed for good an hour ago (one for a recover to send)."""
    event = Event.objects.create(owner=owner, subject_id=uuid.uuid4(), event_type="job.succeeded", body=b"{}")
    an_hour_ago = timezone.now() - timedelta(hours=1)
    Delivery.objects.create(event=event, owner=owner, subject_id=event.subject_id, endpoint=endpoint,
                            url=endpoint.url, state=Delivery.State.FAILED, attempt_count=3,
                            created_at=an_hour_ago, finished_at=an_hour_ago)


CHANGES: dict[str, Callable[[Client, Endpoint], Any]] = {
    "patch": lambda owner, endpoint: endpoints.endpoint_update(
        owner_id=owner.pk, endpoint_id=endpoint.pk, description="renamed"
    ),
    "recover": lambda owner, endpoint: endpoints.endpoint_recover(
        owner_id=owner.pk, endpoint_id=endpoint.pk, since=timezone.now() - timedelta(days=1)
    ),
    "reschedule": lambda owner, endpoint: reschedule.endpoint_reschedule(
        endpoint_id=endpoint.pk, version=endpoint.schedule_version, before=timezone.now()
    ),
}


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_a_job_event_for_an_endpoint_does_not_wait_for_a_change_to_it(owner: Client, change: str) -> None:
    # Given an endpoint (with a failure to recover)
    endpoint = endpoints.endpoint_create(owner_id=owner.pk, url=RECEIVER, event_types=["job.succeeded"])
    _failed_delivery(owner, endpoint)
    recorded: list[Event] = []

    def record() -> None:  # a job's transition, on a connection of its own
        try:
            with transaction.atomic():
                recorded.append(outbox.event_record(
                    owner_id=owner.pk, subject_id=uuid.uuid4(), event_type="job.succeeded", data={"n": 1},
                    endpoints=[endpoint], publish=False,
                ))
        finally:
            connection.close()

    recorder = threading.Thread(target=record)
    recorded_meanwhile: list[bool] = []

    def record_while_locked(execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any) -> Any:
        result = execute(sql, params, many, context)
        if sql.startswith("SELECT") and 'FROM "webhooks_endpoint"' in sql and " FOR " in sql and not recorded_meanwhile:
            # When a job's transition records its event for the endpoint while the change holds it
            recorder.start()
            recorder.join(timeout=5)
            recorded_meanwhile.append(not recorder.is_alive())
        return result

    with connection.execute_wrapper(record_while_locked):
        CHANGES[change](owner, endpoint)
    recorder.join(timeout=30)

    # Then the event was recorded, its delivery with it, without waiting for the change to end
    assert recorded_meanwhile == [True]
    assert Delivery.objects.filter(event=recorded[0], endpoint=endpoint).exists()
