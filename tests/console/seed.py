"""Rows for every section of the console: jobs in each status (some stuck, some failed), failing
receivers, endpoints disabled with deliveries held behind them, and workers up, lost and stopped. Written through the ORM, as the service's own
writes leave them."""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import timedelta

from django.utils import timezone

from console.models import WorkerHeartbeat
from core.models import Client
from core.services import client_create
from jobs.models import Job
from webhooks.models import Delivery, DeliveryAttempt, Endpoint, Event

HELLO = "api.tasks.hello_world"
LONG = "api.tasks.long_running_task"
CHECKLIST = "api.tasks.generate_checklist_from_guidelines"
DOWN_HOST = "hooks.down.example"
FLAKY_HOST = "flaky.example"
GONE_HOST = "hooks.gone.example"
PAUSED_HOST = "paused.example"
# In a disabled endpoint's URL: the console names its host, never this.
URL_TOKEN = "tok-in-the-url"


@dataclass
class Seeded:
    client: Client
    oldest_pending: Job
    longest_running: Job
    failed: list[Job] = field(default_factory=list)
    failing_delivery: Delivery | None = None
    # Disabled for failing (three deliveries held), and by its client (one).
    disabled: list[Endpoint] = field(default_factory=list)


def _job(client: Client, job_name: str, status: str, *, age: timedelta, **fields: object) -> Job:
    now = timezone.now()
    return Job.objects.create(**{"owner": client, "job_name": job_name, "status": status,
                                 "created_at": now - age, "dispatched_at": now - age, **fields})


def _delivery(client: Client, url: str, state: str, *, age: timedelta, error: str = "",
              status_code: int | None = None) -> Delivery:
    now = timezone.now()
    event = Event.objects.create(owner=client, subject_id=uuid.uuid4(), event_type="job.succeeded", body=b"{}",
                                 created_at=now - age)
    delivery = Delivery.objects.create(
        event=event, owner=client, subject_id=event.subject_id, url=url, state=state, attempt_count=1,
        created_at=now - age, finished_at=None if state == Delivery.State.PENDING else now - age,
        next_attempt_at=now + timedelta(minutes=5) if state == Delivery.State.PENDING else None,
    )
    DeliveryAttempt.objects.create(delivery=delivery, number=1, started_at=now - age, finished_at=now - age,
                                   duration_ms=12, status_code=status_code, error=error)
    return delivery


def failing_deliveries(client: Client, url: str, *, failed: int, retrying: int, age: timedelta,
                       endpoint: Endpoint | None = None, status_code: int = 503) -> None:
    """`failed` deliveries to `url` given up on `age` ago and `retrying` waiting for their second
    attempt (the newer the failure, the later the retry), each with one failed attempt: in bulk,
    for receivers with thousands of failures."""
    now = timezone.now()
    event = Event.objects.create(owner=client, subject_id=uuid.uuid4(), event_type="job.succeeded", body=b"{}")
    deliveries = Delivery.objects.bulk_create([
        Delivery(event=event, owner=client, subject_id=event.subject_id, endpoint=endpoint, url=url, state=state,
                 attempt_count=1, created_at=now - age, finished_at=None if state == Delivery.State.PENDING else now - age,
                 next_attempt_at=now + timedelta(hours=1) - age if state == Delivery.State.PENDING else None)
        for state in [Delivery.State.FAILED] * failed + [Delivery.State.PENDING] * retrying
    ])
    DeliveryAttempt.objects.bulk_create([
        DeliveryAttempt(delivery=delivery, endpoint_id=endpoint.pk if endpoint else None, number=1,
                        started_at=now - age, finished_at=now - age, duration_ms=12, status_code=status_code)
        for delivery in deliveries
    ])


def _endpoint(client: Client, url: str, reason: str, *, age: timedelta, held: int) -> Endpoint:
    now = timezone.now()
    endpoint = Endpoint.objects.create(owner=client, url=url, enabled=False, disabled_reason=reason,
                                       disabled_at=now - age, created_at=now - age - timedelta(days=1))
    for _ in range(held):
        event = Event.objects.create(owner=client, subject_id=uuid.uuid4(), event_type="job.succeeded", body=b"{}")
        Delivery.objects.create(event=event, owner=client, subject_id=event.subject_id, endpoint=endpoint, url=url,
                                state=Delivery.State.ENDPOINT_DISABLED, next_attempt_at=now)
    return endpoint


def seed() -> Seeded:
    now = timezone.now()
    client = client_create(name=f"acme-{uuid.uuid4().hex[:6]}")
    oldest = _job(client, HELLO, Job.Status.PENDING, age=timedelta(minutes=20))
    _job(client, HELLO, Job.Status.PENDING, age=timedelta(minutes=2))
    # Scheduled for later: not waiting yet, so not among the oldest pending.
    _job(client, HELLO, Job.Status.PENDING, age=timedelta(hours=2), run_at=now + timedelta(hours=1), dispatched_at=None)
    longest = _job(client, LONG, Job.Status.STARTED, age=timedelta(minutes=9), started_at=now - timedelta(minutes=8))
    _job(client, CHECKLIST, Job.Status.RETRY, age=timedelta(minutes=4), started_at=now - timedelta(minutes=3),
         attempt=2, max_attempts=3, error={"type": "RateLimitError", "message": "slow down"})
    for minutes in (1, 5, 12):
        _job(client, HELLO, Job.Status.SUCCESS, age=timedelta(minutes=minutes + 1),
             started_at=now - timedelta(minutes=minutes, seconds=1), finished_at=now - timedelta(minutes=minutes))
    failed = [
        _job(client, CHECKLIST, Job.Status.FAILURE, age=timedelta(minutes=m + 1), started_at=now - timedelta(minutes=m + 1),
             finished_at=now - timedelta(minutes=m), error={"type": "ValueError", "message": f"no checklist ({m})"})
        for m in (3, 7)
    ]
    failed.append(_job(client, LONG, Job.Status.FAILURE, age=timedelta(minutes=30), started_at=now - timedelta(minutes=29),
                       finished_at=now - timedelta(minutes=24),
                       error={"type": "time_limit_exceeded", "message": "Step 1 ran out of time."}))
    _job(client, HELLO, Job.Status.REVOKED, age=timedelta(minutes=6), finished_at=now - timedelta(minutes=6))
    # Finished before the last hour: in no figure.
    _job(client, HELLO, Job.Status.FAILURE, age=timedelta(hours=3), finished_at=now - timedelta(hours=2),
         error={"type": "OldError", "message": "long ago"})

    failing = _delivery(client, f"https://{DOWN_HOST}/hooks", Delivery.State.FAILED, age=timedelta(minutes=8),
                        error="Connection failed: [Errno 111] Connection refused")
    _delivery(client, f"https://{DOWN_HOST}/other", Delivery.State.PENDING, age=timedelta(minutes=2),
              error="Connection failed: [Errno 111] Connection refused")
    _delivery(client, f"https://{FLAKY_HOST}/in", Delivery.State.PENDING, age=timedelta(minutes=1), status_code=503)
    _delivery(client, "https://fine.example/in", Delivery.State.SUCCEEDED, age=timedelta(minutes=1), status_code=200)
    disabled = [
        _endpoint(client, f"https://{GONE_HOST}/in/{URL_TOKEN}?key={URL_TOKEN}", Endpoint.DisabledReason.FAILING,
                  age=timedelta(hours=2), held=3),
        _endpoint(client, f"https://{PAUSED_HOST}/in", Endpoint.DisabledReason.CLIENT, age=timedelta(minutes=10), held=1),
    ]
    Endpoint.objects.create(owner=client, url="https://fine.example/endpoint")

    # Only these workers: the session's worker (when it runs) reports again within seconds.
    WorkerHeartbeat.objects.exclude(hostname__endswith="@seeded").delete()
    for name, queues, seen, stopped in (
        ("jobs@seeded", ["jobs"], now, None),
        ("webhooks@seeded", ["maintenance", "webhooks"], now - timedelta(minutes=5), None),
        ("jobs_long@seeded", ["jobs_long"], now - timedelta(minutes=10), now - timedelta(minutes=10)),
    ):
        started = now - timedelta(hours=1, minutes=-5)
        WorkerHeartbeat.objects.update_or_create(hostname=name, defaults={
            "queues": queues, "concurrency": 2, "pid": 4242, "started_at": started, "up_since": started,
            "seen_at": seen, "stopped_at": stopped})
    return Seeded(client=client, oldest_pending=oldest, longest_running=longest, failed=failed,
                  failing_delivery=failing, disabled=disabled)
