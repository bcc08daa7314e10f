"""A job's progress webhooks take bounded storage: each `job.progress` event replaces the job's
earlier ones, with their deliveries and attempts. Each carries the whole job (up to ~18 KB at
its caps) and a `long_running_task` reports one a second: kept, an hour's job recorded 3,600
events and their deliveries for WEBHOOK_EVENT_RETENTION_DAYS, counted in no quota."""
from __future__ import annotations

import json
import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from examples.receiver import Receiver, Reply
from tests.conftest import Api
from tests.webhooks.conftest import LONG, until
from webhooks.models import Delivery, Event

EVERY_EVENT = ["job.started", "job.progress", "job.succeeded", "job.failed", "job.canceled"]


def stored_types(job_id: str) -> list[str]:
    return list(Event.objects.filter(subject_id=job_id).order_by("pk").values_list("event_type", flat=True))


def test_a_long_jobs_progress_webhooks_keep_the_latest_event_only(api: Api, receiver: Receiver) -> None:
    # Given a job with a callback that reports its progress every second for 4 s
    created = api.submit(LONG, {"duration": 4}, callback_url=receiver.url, webhook_events=EVERY_EVENT)

    # When it has finished and its events were delivered
    assert api.wait(created["id"])["status"] == "SUCCESS"
    until(lambda: any(r.event["type"] == "job.succeeded" for r in receiver.received), what="job.succeeded")

    # Then the receiver heard several progress events, as they came
    heard = [r.event for r in receiver.received if r.event["type"] == "job.progress"]
    assert len(heard) >= 3, heard
    # And the job's stored events are started, its latest progress and succeeded, with one
    # delivery each: one event of 18 KB (and its delivery and attempts) a second was kept
    until(lambda: stored_types(created["id"]) == ["job.started", "job.progress", "job.succeeded"],
          timeout=10, what=f"three stored events, not {stored_types(created['id'])}")
    assert Delivery.objects.filter(subject_id=created["id"]).count() == 3
    latest = Event.objects.get(subject_id=created["id"], event_type="job.progress")
    assert json.loads(bytes(latest.body)) == heard[-1]


def test_a_receiver_down_during_the_job_gets_the_latest_progress_not_every_one(
    api: Api, receiver: Receiver
) -> None:
    # Given a receiver that answers 503 to everything while the job runs, each delivery's retry an
    # hour away (its Retry-After): none gives up meanwhile, however slow the machine
    receiver.replies.extend([Reply(status=503, headers={"Retry-After": "3600"})] * 1000)
    created = api.submit(LONG, {"duration": 4}, callback_url=receiver.url, webhook_events=EVERY_EVENT)
    assert api.wait(created["id"])["status"] == "SUCCESS"
    failed = len(receiver.received)
    missed = [r.event for r in receiver.received if r.event["type"] == "job.progress"]
    assert len(missed) >= 3, missed

    # When it recovers, and every delivery still waiting is sent (made due now)
    with receiver._condition:
        receiver.replies.clear()

    def waiting() -> bool:
        pending, now = Delivery.objects.filter(subject_id=created["id"], state="pending"), timezone.now()
        pending.filter(claimed_until__isnull=True, next_attempt_at__gt=now).update(next_attempt_at=now, dispatched_at=None)
        return pending.exists()

    until(lambda: not waiting(), timeout=60, what="every delivery sent")

    # Then it got the latest progress once, not a backlog of every progress it missed
    retried = [r.event for r in receiver.received[failed:] if r.status == 200]
    progress = [event for event in retried if event["type"] == "job.progress"]
    assert len(progress) == 1, [event["data"]["progress"] for event in progress]
    latest = Event.objects.get(subject_id=created["id"], event_type="job.progress")
    assert progress[0] == json.loads(bytes(latest.body))
    # And the earlier ones' deliveries, waiting for their retries, went with their events
    assert Delivery.objects.filter(subject_id=created["id"], event_type="job.progress").count() == 1
    assert sorted(event["type"] for event in retried) == ["job.progress", "job.started", "job.succeeded"]


@pytest.mark.django_db
def test_a_progress_delivery_a_worker_is_sending_is_not_pulled_from_under_it() -> None:
    from core.services import client_create
    from webhooks import outbox

    # Given a job's two progress events, a worker sending the first one's delivery right now
    owner = client_create(name=f"inflight-{uuid.uuid4().hex[:8]}")
    job_id = uuid.uuid4()

    def progress() -> Event:
        return outbox.event_record(owner_id=owner.pk, subject_id=job_id, event_type="job.progress", body=b"{}",
                                   callback_url="https://hooks.example.com/", publish=False, replaces_earlier=True)

    sending = progress()
    Delivery.objects.filter(event=sending).update(claim_token=uuid.uuid4(), claimed_until=timezone.now())
    waiting = progress()

    # When a third is recorded
    latest = progress()

    # Then the one being sent stays, with its delivery; the one waiting went with its delivery
    assert list(Event.objects.filter(subject_id=job_id).order_by("pk").values_list("pk", flat=True)) == [
        sending.pk, latest.pk
    ]
    assert not Delivery.objects.filter(event_id=waiting.pk).exists()
    assert Delivery.objects.filter(event=sending).count() == 1


@pytest.mark.django_db
def test_a_replaced_progress_delivery_to_a_paced_endpoint_gives_its_place_to_the_latest() -> None:
    from core.services import client_create
    from webhooks import backlog, outbox
    from webhooks.models import Endpoint

    # Given an endpoint paced at one delivery every 10 s, subscribed to a job's progress, with
    # a delivery waiting for its slot
    owner = client_create(name=f"paced-{uuid.uuid4().hex[:8]}")
    endpoint = Endpoint.objects.create(owner=owner, url="https://hooks.example.com/", event_types=["job.progress"],
                                       rate_limit_per_second=0.1, next_slot_at=timezone.now() + timedelta(seconds=60))
    job_id = uuid.uuid4()

    def progress() -> Event:
        return outbox.event_record(owner_id=owner.pk, subject_id=job_id, event_type="job.progress", body=b"{}",
                                   endpoints=[endpoint], publish=False, replaces_earlier=True)

    first = progress()
    first_due = Delivery.objects.get(event=first).next_attempt_at

    # When the job reports its progress nine times more, one a second as a long_running_task does
    for _ in range(9):
        latest = progress()

    # Then the latest progress goes at the first one's place, and the endpoint's backlog (what
    # webhook_backlog_full refuses submissions for) is that one delivery, not ten phantom slots
    assert Delivery.objects.filter(subject_id=job_id).count() == 1
    assert Delivery.objects.get(event=latest).next_attempt_at == first_due
    [waiting] = backlog.endpoint_backlogs(owner_id=owner.pk, now=timezone.now())
    assert waiting.waiting_deliveries == 6, waiting  # the 60 s before, and its own slot's 10 s


@pytest.mark.django_db
def test_a_progress_event_replaces_the_earlier_one_in_a_few_statements_without_reading_its_body() -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from core.services import client_create
    from webhooks import outbox

    # Given a job's progress event of 18 KB, delivered to its callback_url
    owner = client_create(name=f"cost-{uuid.uuid4().hex[:8]}")
    job_id = uuid.uuid4()

    def progress() -> Event:
        return outbox.event_record(owner_id=owner.pk, subject_id=job_id, event_type="job.progress",
                                   body=b"x" * 18_000, callback_url="https://hooks.example.com/",
                                   publish=False, replaces_earlier=True)

    progress()

    # When the next one replaces it
    with CaptureQueriesContext(connection) as queries:
        progress()

    # Then that is the INSERT and ten statements (three locks, two counts, the deletes), none
    # of them reading the replaced event's body back
    statements = [query["sql"] for query in queries.captured_queries]
    assert len(statements) == 11, statements
    assert not [sql for sql in statements if '"webhooks_event"."body"' in sql], statements


@pytest.mark.django_db(transaction=True)
def test_a_progress_event_does_not_wait_for_an_attempt_another_transaction_holds() -> None:
    import threading

    from django.db import connection, transaction

    from core.services import client_create
    from webhooks import outbox
    from webhooks.models import DeliveryAttempt

    # Given a job's progress event whose delivery was attempted, the attempt's row held by
    # another transaction: a client's batched deletion deleting it before its delivery, in the
    # order an attempt's recording takes them (core/services.py)
    owner = client_create(name=f"held-{uuid.uuid4().hex[:8]}")
    job_id = uuid.uuid4()

    def progress() -> Event:
        with transaction.atomic():  # as a job's transition records it
            return outbox.event_record(owner_id=owner.pk, subject_id=job_id, event_type="job.progress", body=b"{}",
                                       callback_url="https://hooks.example.com/", publish=False,
                                       replaces_earlier=True)

    first = progress()
    attempt = DeliveryAttempt.objects.create(delivery=Delivery.objects.get(event=first), number=1,
                                             finished_at=timezone.now(), status_code=200)
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        try:
            with transaction.atomic():
                DeliveryAttempt.objects.select_for_update().filter(pk=attempt.pk).exists()
                held.set()
                release.wait(10)
        finally:
            connection.close()

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(10)

        # When the job's next progress is recorded (waiting at most 2 s for a lock)
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL lock_timeout = '2s'")
            latest = progress()
    finally:
        release.set()
        holder.join()

    # Then it went through without waiting (the two waited on each other, a deadlock, when the
    # other then deleted the delivery the progress held), and the event held stays for the next
    assert set(Event.objects.filter(subject_id=job_id).values_list("pk", flat=True)) == {first.pk, latest.pk}
    assert DeliveryAttempt.objects.filter(pk=attempt.pk).exists()
