"""Pruning the outbox: an event goes after WEBHOOK_EVENT_RETENTION_DAYS once every delivery of it
is over; one held for a disabled endpoint is not over (enabling the endpoint sends it)."""
from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from core.services import client_create
from webhooks import outbox, reschedule, tasks
from webhooks.endpoints import endpoint_update
from webhooks.models import Delivery, Endpoint, Event

pytestmark = pytest.mark.django_db


def test_a_delivery_held_for_a_disabled_endpoint_outlives_the_retention(settings: Any) -> None:
    # Given an endpoint disabled (as failing) 31 days ago, with a delivery held since, and
    # events retained for 30 days
    settings.WEBHOOK_EVENT_RETENTION_DAYS = 30
    owner = client_create(name=f"held-{uuid.uuid4().hex[:8]}")
    endpoint = Endpoint.objects.create(owner=owner, url="https://hooks.example.com/", enabled=False,
                                       disabled_reason=Endpoint.DisabledReason.FAILING)
    at = timezone.now() - timedelta(days=31)
    event = Event.objects.create(owner=owner, subject_id=uuid.uuid4(), event_type="job.succeeded",
                                 body=b"{}", created_at=at)
    held = Delivery.objects.create(event=event, owner=owner, subject_id=event.subject_id, endpoint=endpoint,
                                   url=endpoint.url, state=Delivery.State.ENDPOINT_DISABLED, created_at=at,
                                   next_attempt_at=at)

    # When the housekeeping runs, then the endpoint is enabled again
    pruned = tasks.webhooks_prune()
    assert pruned["events"] == 0
    enabled = endpoint_update(owner_id=owner.pk, endpoint_id=endpoint.pk, enabled=True)
    # (what the deliveries worker does once the change commits: this test's transaction never does)
    reschedule.endpoint_reschedule(endpoint_id=endpoint.pk, version=enabled.schedule_version, before=timezone.now())

    # Then the held delivery was kept, and goes now
    held.refresh_from_db()
    assert held.state == Delivery.State.PENDING


def test_a_run_stopped_at_its_cap_queues_the_next_until_no_event_past_retention_is_left(
    settings: Any, monkeypatch: pytest.MonkeyPatch, queued_tasks: list[str]
) -> None:
    # Given more delivered events past their retention than one run deletes (here 2 batches of 1)
    settings.WEBHOOK_EVENT_RETENTION_DAYS = 30
    monkeypatch.setattr(outbox, "PRUNE_BATCH_SIZE", 1)
    monkeypatch.setattr(outbox, "PRUNE_MAX_BATCHES", 2)
    owner = client_create(name=f"backlog-{uuid.uuid4().hex[:8]}")
    at = timezone.now() - timedelta(days=31)
    for _ in range(5):
        event = Event.objects.create(owner=owner, subject_id=uuid.uuid4(), event_type="job.succeeded",
                                     body=b"{}", created_at=at)
        Delivery.objects.create(event=event, owner=owner, subject_id=event.subject_id, url="https://hooks.example.com/",
                                state=Delivery.State.SUCCEEDED, created_at=at)

    # When beat's run goes, then each run it queued (run here, in the test's transaction)
    runs = [tasks.webhooks_prune()["events"]]
    while "webhooks.prune" in queued_tasks:
        queued_tasks.remove("webhooks.prune")
        runs.append(tasks.webhooks_prune()["events"])

    # Then each run that stopped at its cap queued the next, and none of those events is left
    assert runs == [2, 2, 1]
    assert not Event.objects.filter(owner=owner).exists()


def test_each_batch_looks_for_the_oldest_events_first() -> None:
    # Given nothing to prune
    # When a batch looks for events past the retention
    with CaptureQueriesContext(connection) as queries:
        outbox.events_prune(older_than=timezone.now() - timedelta(days=30), max_batches=1)

    # Then it asks for them oldest first: PostgreSQL walks event_created up to the cut-off. Unordered,
    # it may walk every event by primary key instead (docs/reliability.md, "Pruning at two million
    # events").
    [look] = [query["sql"] for query in queries.captured_queries if "LIMIT" in query["sql"]]
    assert 'NOT (EXISTS(' in look
    # (and locks them as it takes them, skipping those a redelivery or a recovery holds)
    assert look.endswith('ORDER BY "webhooks_event"."created_at" ASC LIMIT 1000 FOR UPDATE OF "webhooks_event" SKIP LOCKED'), look
