"""An endpoint's health counts (`health.succeeded_24h` / `failed_24h` in GET /api/webhook-endpoints/):
its attempts started in the last 24 hours that have ended, each counted once, none of another
endpoint's; read from its own recent attempts by index, not from the table or its history."""
from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test import Client as DjangoClient
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from core.models import Client
from core.services import api_key_create, client_create
from examples.receiver import Receiver, Reply
from tests.conftest import plan_of
from webhooks import attempts, claims, outbox
from webhooks.models import Delivery, DeliveryAttempt, Endpoint, Event

WINDOW = timedelta(hours=24)


def make_owner() -> Client:
    return client_create(name=f"counts-{uuid.uuid4().hex[:8]}")


def make_endpoint(owner: Client, url: str) -> Endpoint:
    return Endpoint.objects.create(owner=owner, url=url, event_types=["job.succeeded"])


def make_delivery(owner: Client, endpoint: Endpoint | None, url: str, **fields: Any) -> Delivery:
    """A due delivery written directly (nothing published), as event_record would leave it."""
    now = timezone.now()
    event = Event.objects.create(
        owner=owner, subject_id=uuid.uuid4(), event_type="job.succeeded",
        body=outbox.event_body(event_type="job.succeeded", data={"id": "x"}, at=now),
    )
    return Delivery.objects.create(event=event, owner=owner, subject_id=event.subject_id, endpoint=endpoint,
                                   url=url, next_attempt_at=now, dispatched_at=now, **fields)


def health_listed(owner: Client) -> dict[str, tuple[int, int]]:
    """Each of the owner's endpoints' (succeeded_24h, failed_24h), as its list shows them."""
    http = DjangoClient(HTTP_AUTHORIZATION=f"Bearer {api_key_create(client=owner)}")
    response = http.get("/api/webhook-endpoints/")
    assert response.status_code == 200, response.content
    return {e["id"]: (e["health"]["succeeded_24h"], e["health"]["failed_24h"]) for e in response.json()["results"]}


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("claim_implementation")
def test_the_counts_are_the_endpoints_attempts_started_in_the_last_24_hours(
    make_receiver: Callable[..., Receiver],
) -> None:
    # Given an endpoint whose receiver refuses the first request it gets, and 200 after, another
    # client's endpoint and a job's callback_url, whose receivers answer 200 and 410 (Gone: no
    # retry, which a worker of the session could make meanwhile)
    mine, ok, failing = make_receiver(Reply(status=410)), make_receiver(), make_receiver(*[Reply(status=410)] * 10)
    owner, other = make_owner(), make_owner()
    endpoint, others = make_endpoint(owner, mine.url), make_endpoint(other, ok.url)
    now = timezone.now()
    # Four deliveries to the endpoint: one recorded three days ago (held while the endpoint was
    # disabled, sent now); one of them its receiver refuses
    sent = [make_delivery(owner, endpoint, mine.url, created_at=now - timedelta(days=3)),
            *(make_delivery(owner, endpoint, mine.url) for _ in range(3))]
    # One whose worker died mid-attempt: its claim ran out, so the next attempt closes the lost one
    lost = make_delivery(owner, endpoint, mine.url)
    assert claims.claim(scope=claims.Scope(delivery_ids=[lost.pk]), token=uuid.uuid4())
    Delivery.objects.filter(pk=lost.pk).update(claimed_until=now - timedelta(seconds=1))
    # And one under way (claimed, no answer yet), the other client's and the callback's
    under_way = make_delivery(owner, endpoint, mine.url)
    others_delivery = make_delivery(other, others, ok.url)
    callback = make_delivery(owner, None, failing.url)

    # When they are attempted (the one under way is not finished)
    made = attempts.deliveries_attempt(delivery_ids=[d.pk for d in [*sent, lost, others_delivery, callback]])
    assert claims.claim(scope=claims.Scope(delivery_ids=[under_way.pk]), token=uuid.uuid4())

    # Then the endpoint counts its own finished attempts once each: three 2xx of the four sent,
    # the lost delivery's interrupted attempt as failed and its next as a 2xx; not the one under
    # way, the other client's or the callback's
    assert len(made) == 7
    assert health_listed(owner) == {str(endpoint.pk): (4, 2)}
    assert health_listed(other) == {str(others.pk): (1, 0)}

    # And the window is the last 24 hours of starts, to the second: an attempt started 24 hours
    # and a second ago has left it, one started 23 h 59 min 59 s ago has not
    first, second = (DeliveryAttempt.objects.filter(delivery__in=sent, status_code__lt=300).order_by("pk")
                     .values_list("pk", flat=True)[:2])
    DeliveryAttempt.objects.filter(pk=first).update(started_at=timezone.now() - WINDOW - timedelta(seconds=1))
    DeliveryAttempt.objects.filter(pk=second).update(started_at=timezone.now() - WINDOW + timedelta(seconds=1))
    assert health_listed(owner) == {str(endpoint.pk): (3, 2)}
    http = DjangoClient(HTTP_AUTHORIZATION=f"Bearer {api_key_create(client=owner)}")
    detail = http.get(f"/api/webhook-endpoints/{endpoint.pk}/").json()["health"]
    assert (detail["succeeded_24h"], detail["failed_24h"]) == (3, 2)


# Attempts of other endpoints, and the endpoint's own history before the window.
OTHERS, HISTORY = 40_000, 20_000


@pytest.mark.django_db
def test_the_counts_read_only_the_endpoints_attempts_of_the_window() -> None:
    # Given an endpoint with 20,000 attempts from before the window and 30 in it, among
    # 40,000 recent attempts of other clients' endpoints (a callback's among them)
    owner, other = make_owner(), make_owner()
    endpoint = make_endpoint(owner, "https://hooks.example.com/")
    others = [make_endpoint(other, f"https://hooks-{n}.example.com/") for n in range(5)]
    with connection.cursor() as cursor:
        cursor.execute(
            """
            CREATE TEMP TABLE seed ON COMMIT DROP AS
            SELECT g, CASE WHEN g <= %(history)s + 30 THEN %(endpoint)s::uuid
                           WHEN g %% 10 = 0 THEN NULL ELSE (%(others)s::uuid[])[1 + g %% 5] END AS endpoint_id,
                   CASE WHEN g <= %(history)s THEN now() - interval '2 days' - g * interval '1 second'
                        ELSE now() - g %% 3600 * interval '1 second' END AS at
            FROM generate_series(1, %(history)s + 30 + %(others_count)s) g;
            INSERT INTO webhooks_event (message_id, owner_id, subject_id, event_type, body, created_at)
            SELECT 'msg_counts_' || g, %(owner)s, gen_random_uuid(), 'job.succeeded', '\\x7b7d', at FROM seed;
            INSERT INTO webhooks_delivery (event_id, owner_id, subject_id, endpoint_id, url, state, redelivery,
                                           attempt_count, created_at, finished_at)
            SELECT e.id, e.owner_id, e.subject_id, s.endpoint_id, 'https://hooks.example.com/', 'succeeded',
                   false, 1, s.at, s.at
            FROM seed s JOIN webhooks_event e ON e.message_id = 'msg_counts_' || s.g;
            INSERT INTO webhooks_deliveryattempt (delivery_id, endpoint_id, number, started_at, finished_at,
                                                  status_code, response_body, error)
            SELECT id, endpoint_id, 1, created_at, created_at, 200, '', '' FROM webhooks_delivery;
            ANALYZE webhooks_delivery;
            ANALYZE webhooks_deliveryattempt;
            """,
            {"history": HISTORY, "others_count": OTHERS, "endpoint": endpoint.pk, "owner": owner.pk,
             "others": [e.pk for e in others]},
        )

    # When the client lists its endpoints
    with CaptureQueriesContext(connection) as queries:
        assert health_listed(owner) == {str(endpoint.pk): (30, 0)}
    [counts] = [q["sql"] for q in queries.captured_queries if "webhooks_deliveryattempt" in q["sql"]]
    plan = plan_of(counts, analyze=True)

    # Then the counts come from attempt_endpoint_started, by the endpoint and the window's start,
    # and read its 30 attempts: none of the other endpoints', none of its own history, and no
    # table read whole (through the deliveries, every attempt was read to join them)
    assert "Seq Scan" not in plan, plan
    scan = re.search(r"(?:Index Scan using|Bitmap Index Scan on) attempt_endpoint_started .*actual time=\S+ rows=(\d+)",
                     plan)
    assert scan and scan.group(1) == "30", plan
    assert re.search(r"Index Cond: \(\(endpoint_id = '[^']+'::uuid\) AND \(started_at >= ", plan), plan
