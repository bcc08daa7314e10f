"""A change of an endpoint's pace, or its client disabling and enabling it, costs its request no
work on the endpoint's deliveries, however many wait: the deliveries worker reschedules them in
batches (webhooks/reschedule.py), and they still go at the endpoint's pace, not all at once. The
request rewrote every waiting delivery and made them all due: at 200,000 of them a PATCH took
5.3 s of its API process, in its turn, and pushed 200,000 ids onto the due queue for the
workers to claim and put back (docs/webhooks.md, "Pace")."""
from __future__ import annotations

import time
import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.db import connection
from django.db.models import F
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from core.services import client_create
from examples.receiver import Receiver
from tests.conftest import Api
from tests.webhooks.conftest import assert_arrived_paced, until
from webhooks import dispatch, endpoints, reschedule
from webhooks.models import Delivery, Endpoint, Event

BACKLOG = 3000
State = Delivery.State


def endpoint_with_backlog(api: Api, url: str, *, state: str = State.PENDING) -> dict[str, Any]:
    """An endpoint paced at one delivery every 100 s with BACKLOG deliveries waiting for their
    slots (or held, `state` endpoint_disabled, with the endpoint disabled), as that many events
    would have left it: the rows written directly, the events' recording is not what is tested."""
    response = api.post("/api/webhook-endpoints/", json={"url": url, "rate_limit_per_second": 0.01,
                                                          "enabled": state == State.PENDING})
    assert response.status_code == 201, response.text
    endpoint = response.json()
    now, every = timezone.now(), timedelta(seconds=100)
    events = Event.objects.bulk_create([
        Event(owner=api.client, subject_id=api.client.pk, event_type="job.succeeded", body=b"{}",
              created_at=now - timedelta(hours=1) + timedelta(milliseconds=n))
        for n in range(BACKLOG)
    ])
    Delivery.objects.bulk_create([
        Delivery(event=event, owner=api.client, subject_id=event.subject_id, endpoint_id=endpoint["id"],
                 url=url, state=state, created_at=event.created_at, next_attempt_at=now + every * (n + 1))
        for n, event in enumerate(events)
    ])
    Endpoint.objects.filter(pk=endpoint["id"]).update(next_slot_at=now + every * (BACKLOG + 1))
    return endpoint


def patch(api: Api, endpoint: dict[str, Any], **changes: Any) -> dict[str, Any]:
    response = api.request("PATCH", f"/api/webhook-endpoints/{endpoint['id']}/", json=changes)
    assert response.status_code == 200, response.text
    return dict(response.json())


def waiting(endpoint: dict[str, Any], state: str = State.PENDING) -> list[Delivery]:
    return list(Delivery.objects.filter(endpoint_id=endpoint["id"], state=state).order_by("next_attempt_at"))


def assert_paced(received: list[Any], deliveries: list[Delivery], *, every_seconds: float) -> None:
    """What arrived came at least `every_seconds` apart (less the arrival's jitter), and what
    waits is spaced that far: the last of the backlog a whole backlog's time away, and only a
    few due in the next seconds, not thousands."""
    assert_arrived_paced([r.received_at for r in received], every_seconds=every_seconds)
    spread = (deliveries[-1].next_attempt_at - timezone.now()).total_seconds()
    assert spread >= (len(deliveries) - 1) * every_seconds * 0.9, spread
    # (and those due and not yet sent: a few, the worker's lag)
    due_soon = [d for d in deliveries if d.next_attempt_at <= timezone.now() + timedelta(seconds=10)]
    assert len(due_soon) <= 10 / every_seconds + 10, len(due_soon)


def test_a_new_pace_costs_the_request_no_delivery_and_the_backlog_goes_at_it(
    api: Api, receiver: Receiver, delivery_writes: list[tuple[str, int]]
) -> None:
    # Given an endpoint paced at one delivery every 100 s, with 3,000 waiting for their slots
    endpoint = endpoint_with_backlog(api, receiver.url)

    # When its client changes the pace, to 0.02 and back, then to four a second
    for rate in (0.02, 0.01, 4):
        assert patch(api, endpoint, rate_limit_per_second=rate)["rate_limit_per_second"] == rate

    # Then none of the requests wrote a delivery
    assert delivery_writes == []

    # And the backlog goes at the new pace: a quarter of a second apart, none dropped, the last
    # of them 3,000 slots away, not all due at once
    received = receiver.wait_for(4, timeout=30)
    until(lambda: (waiting(endpoint)[-1].next_attempt_at - timezone.now()).total_seconds() > 600,
          what="the whole backlog rescheduled")
    assert_paced(received, waiting(endpoint), every_seconds=0.25)
    assert Delivery.objects.filter(endpoint_id=endpoint["id"]).count() == BACKLOG

    # And the endpoint tells how far its backlog reaches: its next free slot, past the last
    shown = api.get(f"/api/webhook-endpoints/{endpoint['id']}/").json()["next_slot_at"]
    assert datetime.fromisoformat(shown) > waiting(endpoint)[-1].next_attempt_at


def test_disabling_then_enabling_costs_the_requests_no_delivery_and_the_held_go_at_the_pace(
    api: Api, receiver: Receiver, delivery_writes: list[tuple[str, int]]
) -> None:
    # Given an endpoint paced at four deliveries a second, with 3,000 waiting for their slots
    endpoint = endpoint_with_backlog(api, receiver.url)
    patch(api, endpoint, rate_limit_per_second=4)
    until(lambda: not Delivery.objects.filter(endpoint_id=endpoint["id"], state=State.PENDING,
                                              next_attempt_at__gt=timezone.now() + timedelta(seconds=800)).exists(),
          what="the backlog at the new pace")
    delivery_writes.clear()

    # When its client disables it
    assert patch(api, endpoint, enabled=False)["disabled_reason"] == "client"

    # Then the request wrote no delivery, and they are all held soon after, none sent while held
    assert delivery_writes == []
    until(lambda: not waiting(endpoint), what="all held")
    held = len(waiting(endpoint, State.ENDPOINT_DISABLED))
    sent = len(receiver.received)
    assert held + sent >= BACKLOG - 1  # one may have been on its way when the endpoint was disabled

    # When it is enabled again
    assert patch(api, endpoint, enabled=True)["enabled"] is True

    # Then that request wrote none either, and the held ones go at its pace, not all at once
    assert delivery_writes == []
    received = receiver.wait_for(sent + 4, timeout=30)[sent:]
    until(lambda: not waiting(endpoint, State.ENDPOINT_DISABLED), what="all resumed")
    assert_paced(received, waiting(endpoint), every_seconds=0.25)


def test_the_service_disabling_a_failing_endpoint_holds_its_backlog_in_batches(
    api: Api, receiver: Receiver
) -> None:
    # Given an endpoint with 3,000 deliveries waiting for their slots
    endpoint = endpoint_with_backlog(api, receiver.url)

    # When the health rule disables it as failing (in a deliveries worker, inside the
    # transaction recording the attempt that failed)
    with CaptureQueriesContext(connection) as queries:
        endpoints.endpoint_disable_failing(endpoint_id=endpoint["id"], reason="failing, in the test")

    # Then that transaction wrote no delivery (it held all 3,000 in one UPDATE), and the
    # workers hold them soon after, none sent
    assert [q["sql"] for q in queries if '"webhooks_delivery"' in q["sql"]
            and q["sql"].lstrip().startswith(("UPDATE", "INSERT", "DELETE"))] == []
    assert api.get(f"/api/webhook-endpoints/{endpoint['id']}/").json()["disabled_reason"] == "failing"
    until(lambda: not waiting(endpoint), what="all held")
    assert len(waiting(endpoint, State.ENDPOINT_DISABLED)) == BACKLOG and not receiver.received


def test_a_rescheduling_whose_message_was_lost_is_started_again_by_the_dispatcher(
    api: Api, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a disabled endpoint with 3,000 deliveries held
    endpoint = endpoint_with_backlog(api, receiver.url, state=State.ENDPOINT_DISABLED)

    # When its client enables it at four a second, and the message asking for their
    # rescheduling is lost
    with monkeypatch.context() as lost:
        lost.setattr(reschedule, "_publish", lambda kwargs, countdown=None: None)
        patch(api, endpoint, enabled=True, rate_limit_per_second=4)
    time.sleep(2)
    assert len(waiting(endpoint, State.ENDPOINT_DISABLED)) == BACKLOG and not receiver.received

    # And REDISPATCH_AFTER_SECONDS go by
    Endpoint.objects.filter(pk=endpoint["id"]).update(
        rescheduling_since=F("rescheduling_since") - timedelta(seconds=dispatch.REDISPATCH_AFTER_SECONDS)
    )

    # Then the dispatcher starts it again: the held deliveries go, at the endpoint's pace
    received = receiver.wait_for(4, timeout=30)
    until(lambda: not waiting(endpoint, State.ENDPOINT_DISABLED), what="all resumed")
    assert_paced(received, waiting(endpoint), every_seconds=0.25)
    until(lambda: Endpoint.objects.get(pk=endpoint["id"]).rescheduling_since is None, what="the rescheduling done")


@pytest.mark.django_db(transaction=True)
def test_disabling_holds_the_endpoints_pending_deliveries_but_a_test_event() -> None:
    # Given an endpoint with a job event's delivery and a test event's waiting for their retries
    owner = client_create(name="reschedule-test-event")
    endpoint = endpoints.endpoint_create(owner_id=owner.pk, url="http://127.0.0.1:9/hooks")
    later = timezone.now() + timedelta(hours=1)
    job_event, test_event = [
        Delivery.objects.create(
            event=Event.objects.create(owner=owner, subject_id=subject_id, event_type=event_type, body=b"{}"),
            owner=owner, subject_id=subject_id, endpoint=endpoint, url=endpoint.url, next_attempt_at=later,
            attempt_count=1,
        )
        for subject_id, event_type in [(uuid.uuid4(), "job.succeeded"), (endpoint.pk, "webhook.test")]
    ]

    # When its client disables it, and its rescheduling runs
    endpoint = endpoints.endpoint_update(owner_id=owner.pk, endpoint_id=endpoint.pk, enabled=False)
    reschedule.endpoint_reschedule(endpoint_id=endpoint.pk, version=endpoint.schedule_version, before=timezone.now())

    # Then the job event's delivery is held, and the test event's still goes (at its retry)
    assert Delivery.objects.get(pk=job_event.pk).state == State.ENDPOINT_DISABLED
    assert Delivery.objects.get(pk=test_event.pk).state == State.PENDING
