"""Delivery attempts claim their row: one sender at a time, one recorded success, crash recovery,
the dispatcher, the progress throttle and the check of the address at each attempt."""
from __future__ import annotations

import socket
import threading
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from celery import Celery
from django.db import connection
from django.utils import timezone
from standardwebhooks import Webhook

from core.celery import app as celery_app
from core.models import Client
from core.services import client_create
from examples.receiver import Receiver, Reply
from webhooks import attempts, dispatch, outbox, secrets
from webhooks.models import Delivery, DeliveryAttempt, Endpoint, Event

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("claim_implementation")]


def attempt_once(*, delivery_id: int, **kwargs: Any) -> attempts.AttemptOutcome | None:
    """The delivery's next attempt, as a message carrying it alone runs it; None if not ours."""
    outcomes = attempts.deliveries_attempt(delivery_ids=[delivery_id], **kwargs)
    return outcomes[0] if outcomes else None


@pytest.fixture
def owner() -> Client:
    return client_create(name=f"claims-{uuid.uuid4().hex[:8]}")


def make_delivery(owner: Client, url: str, **fields: Any) -> Delivery:
    """An outbox row written directly (nothing published), as event_record would leave it."""
    now = timezone.now()
    subject_id = fields.pop("subject_id", uuid.uuid4())
    event = Event.objects.create(
        owner=owner,
        subject_id=subject_id,
        event_type="job.succeeded",
        body=outbox.event_body(event_type="job.succeeded", data={"id": "x"}, at=now),
    )
    defaults: dict[str, Any] = {"next_attempt_at": now, "dispatched_at": now}
    defaults.update(fields)
    return Delivery.objects.create(event=event, owner=owner, subject_id=subject_id, url=url, **defaults)


def test_two_workers_never_send_the_same_delivery_at_once(
    owner: Client, make_receiver: Callable[..., Receiver]
) -> None:
    # Given a slow receiver and one due delivery
    receiver = make_receiver(Reply(status=200, delay_seconds=1))
    delivery = make_delivery(owner, receiver.url)
    results: list[Any] = []

    def attempt() -> None:
        try:
            results.append(attempt_once(delivery_id=delivery.pk))
        finally:
            connection.close()

    # When two workers try it at the same time
    threads = [threading.Thread(target=attempt) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # Then one sent it and the other stood back
    assert sum(result is not None for result in results) == 1
    assert len(receiver.received) == 1
    delivery.refresh_from_db()
    assert delivery.state == Delivery.State.SUCCEEDED and delivery.attempt_count == 1


def test_a_success_is_never_recorded_twice(owner: Client, receiver: Receiver) -> None:
    delivery = make_delivery(owner, receiver.url)

    first = attempt_once(delivery_id=delivery.pk)
    again = attempt_once(delivery_id=delivery.pk)  # a duplicate message

    assert first is not None and first.status_code == 200
    assert again is None
    assert DeliveryAttempt.objects.filter(delivery=delivery).count() == 1
    assert len(receiver.received) == 1


def test_an_attempt_whose_worker_died_is_logged_and_taken_over(owner: Client, receiver: Receiver) -> None:
    # Given a delivery claimed by a worker that died mid-attempt (its lease has run out)
    now = timezone.now()
    delivery = make_delivery(
        owner, receiver.url, attempt_count=1, claim_token=uuid.uuid4(), claimed_until=now - timedelta(seconds=1)
    )
    DeliveryAttempt.objects.create(delivery=delivery, number=1, started_at=now - timedelta(minutes=2))

    # When its message is redelivered (late ack) or the dispatcher republishes it
    attempt = attempt_once(delivery_id=delivery.pk)

    # Then the lost attempt is marked interrupted and attempt 2 delivers
    assert attempt is not None and attempt.number == 2 and attempt.status_code == 200
    lost = DeliveryAttempt.objects.get(delivery=delivery, number=1)
    assert "Interrupted" in lost.error and lost.finished_at is not None
    delivery.refresh_from_db()
    assert delivery.state == Delivery.State.SUCCEEDED


def test_a_live_claim_is_not_taken_over(owner: Client, receiver: Receiver) -> None:
    delivery = make_delivery(
        owner, receiver.url, claim_token=uuid.uuid4(), claimed_until=timezone.now() + timedelta(minutes=1)
    )

    assert attempt_once(delivery_id=delivery.pk) is None
    assert receiver.received == []


def test_an_outcome_after_the_claim_was_taken_over_decides_nothing(owner: Client, receiver: Receiver) -> None:
    delivery = make_delivery(owner, receiver.url)
    original_post = attempts.http.post

    def post_then_lose_the_claim(*args: Any, **kwargs: Any) -> Any:
        result = original_post(*args, **kwargs)
        # Meanwhile another worker took the delivery over (our lease ran out).
        Delivery.objects.filter(pk=delivery.pk).update(claim_token=uuid.uuid4())
        return result

    attempts.http.post = post_then_lose_the_claim  # type: ignore[assignment]
    try:
        attempt = attempt_once(delivery_id=delivery.pk)
    finally:
        attempts.http.post = original_post  # type: ignore[assignment]

    assert attempt is not None and attempt.status_code == 200  # the attempt is logged...
    delivery.refresh_from_db()
    assert delivery.state == Delivery.State.PENDING  # ...but the new holder records the outcome


def test_an_endpoints_delivery_is_signed_with_its_secret_and_carries_its_headers(
    owner: Client, receiver: Receiver
) -> None:
    endpoint = Endpoint.objects.create(owner=owner, url=receiver.url, event_types=["job.succeeded"],
                                       headers={"X-Team": "billing"})
    secret = secrets.signing_secret_get_or_create(owner_id=owner.pk, endpoint_id=endpoint.pk)
    secrets.signing_secret_get_or_create(owner_id=owner.pk)  # the client's own, not to be used
    delivery = make_delivery(owner, receiver.url, endpoint=endpoint)

    attempt = attempt_once(delivery_id=delivery.pk)

    assert attempt is not None and attempt.status_code == 200
    [received] = receiver.received
    assert Webhook(secret).verify(received.body, received.headers)["type"] == "job.succeeded"
    assert received.headers["x-team"] == "billing"


def test_a_delivery_whose_endpoint_was_disabled_after_it_was_published_is_held(
    owner: Client, receiver: Receiver
) -> None:
    # Given a published delivery whose endpoint is disabled before its attempt runs
    endpoint = Endpoint.objects.create(owner=owner, url=receiver.url, event_types=["job.succeeded"], enabled=False)
    delivery = make_delivery(owner, receiver.url, endpoint=endpoint)

    # When the attempt's message runs
    attempt = attempt_once(delivery_id=delivery.pk)

    # Then nothing is sent and the delivery waits for the endpoint, unattempted
    assert attempt is None and receiver.received == []
    delivery.refresh_from_db()
    assert delivery.state == Delivery.State.ENDPOINT_DISABLED and delivery.attempt_count == 0


def test_a_disabled_endpoints_test_event_is_sent_and_its_other_deliveries_held(
    owner: Client, receiver: Receiver
) -> None:
    # Given a disabled endpoint with a job event's delivery and a test event's (whose subject is
    # the endpoint), claimed together
    endpoint = Endpoint.objects.create(owner=owner, url=receiver.url, event_types=["job.succeeded"], enabled=False)
    job_event = make_delivery(owner, receiver.url, endpoint=endpoint)
    test_event = make_delivery(owner, receiver.url, endpoint=endpoint, subject_id=endpoint.pk)

    # When their attempts run
    outcomes = attempts.deliveries_attempt(delivery_ids=[job_event.pk, test_event.pk])

    # Then only the test event is sent; the job event's delivery waits for the endpoint
    assert [(o.delivery_id, o.status_code) for o in outcomes] == [(test_event.pk, 200)]
    assert len(receiver.received) == 1
    assert Delivery.objects.get(pk=test_event.pk).state == Delivery.State.SUCCEEDED
    assert Delivery.objects.get(pk=job_event.pk).state == Delivery.State.ENDPOINT_DISABLED


def test_the_address_is_checked_again_at_each_attempt(owner: Client) -> None:
    # Given a callback whose name now resolves to a private address (DNS changed)
    delivery = make_delivery(owner, "http://rebound.example/hook")

    def rebound(host: str, port: int) -> list[str]:
        if host != "rebound.example":
            raise socket.gaierror(socket.EAI_NONAME, "unknown")
        return ["10.9.8.7"]

    attempt = attempt_once(delivery_id=delivery.pk, resolver=rebound)

    # Then the attempt is refused without a connection, logged, and retried later
    assert attempt is not None and attempt.status_code is None
    assert attempt.error.startswith("Refused") and "public addresses only" in attempt.error
    delivery.refresh_from_db()
    assert delivery.state == Delivery.State.PENDING and delivery.next_attempt_at is not None


def test_the_dispatcher_publishes_due_deliveries_once(
    owner: Client, receiver: Receiver, celery_worker: str
) -> None:
    # Given a delivery whose time has come and that no task carries (long delay, or broker down)
    delivery = make_delivery(owner, receiver.url, next_attempt_at=timezone.now() - timedelta(seconds=1),
                             dispatched_at=None)
    later = make_delivery(owner, receiver.url, next_attempt_at=timezone.now() + timedelta(hours=1),
                          dispatched_at=None)

    # (and some other Celery app was made in this thread, as a tool or a probe does: publishing
    # must still go through ours)
    Celery("stray", broker="memory://")

    # When the dispatcher runs twice
    try:
        first = dispatch.deliveries_dispatch_due()
        second = dispatch.deliveries_dispatch_due()
    finally:
        # Ours current again: the tests after this one in the thread resolve shared tasks to it
        # (a retry of one published through the stray app's memory broker, not refused).
        celery_app.set_current()

    # Then the due one was published once (by these runs, or by beat's a moment before) and the
    # worker delivered it; the later one waits
    assert (first, second) in {(1, 0), (0, 0)}
    [received] = receiver.wait_for(1)
    assert received.headers["webhook-id"] == delivery.event.message_id
    later.refresh_from_db()
    assert later.state == Delivery.State.PENDING and later.attempt_count == 0


def test_job_progress_events_are_throttled(owner: Client, receiver: Receiver) -> None:
    from jobs.models import Job
    from jobs.transitions import job_progress

    # Given a running job that wants progress events
    job = Job.objects.create(
        owner=owner,
        job_name="api.tasks.long_running_task",
        payload={"duration": 10},
        status=Job.Status.STARTED,
        started_at=timezone.now(),
        dispatched_at=timezone.now(),
        callback_url=receiver.url,
        webhook_events=["job.progress"],
    )

    # When it reports progress five times in quick succession
    for tick in range(5):
        job_progress(job_id=job.id, current=tick, total=10)

    # Then one progress event was recorded (at most about one a second), with the first progress
    events = list(Event.objects.filter(subject_id=job.id))
    assert len(events) == 1
    assert b'"current":0' in bytes(events[0].body)


def test_an_endpoints_delivery_goes_to_its_url_of_the_moment_and_its_attempt_keeps_it(
    owner: Client, make_receiver: Callable[..., Receiver]
) -> None:
    # Given a delivery recorded for an endpoint, whose URL then changes
    old, new = make_receiver(), make_receiver()
    endpoint = Endpoint.objects.create(owner=owner, url=old.url, event_types=["job.succeeded"])
    delivery = make_delivery(owner, old.url, endpoint=endpoint)
    Endpoint.objects.filter(pk=endpoint.pk).update(url=new.url)

    # When its attempt is made
    attempt_once(delivery_id=delivery.pk)

    # Then it went to the new URL, which the attempt records; the delivery keeps the old
    assert len(new.received) == 1 and not old.received
    assert DeliveryAttempt.objects.get(delivery=delivery).url == new.url
    delivery.refresh_from_db()
    assert delivery.url == old.url and delivery.state == Delivery.State.SUCCEEDED
