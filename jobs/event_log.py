"""Every job's event log (JobEvent): written with each transition, read by the event streams
and `Prefer: wait`, and the progress coalescing both it and the webhooks follow.

A stream reads an owner's events by id, after the last it sent. Ids come from one sequence at
INSERT and become visible at COMMIT, so two transactions could commit out of id order, and a
stream that had sent the later id would never send the earlier one. An owner's events therefore
take their ids under a lock of the owner's, held until their transaction ends: they commit in
the order of their ids. Only the owner's own event-writing transactions wait on each other, for
what is left of each after its event (the outbox's rows)."""
from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.db.models import (
    F,
    Func,
    IntegerField,
    OuterRef,
    QuerySet,
    Subquery,
    Sum,
    Window,
)
from django.utils import timezone

from core.models import Client
from jobs import sql, wakeups
from jobs.models import Job, JobEvent
from jobs.serializers import job_representation
from webhooks.outbox import event_body

# At most one job.progress event logged per job per this many seconds (what streams see;
# webhooks send at most one a second of these, jobs.transitions); the final event carries the
# last progress anyway.
PROGRESS_EVENT_MIN_INTERVAL_SECONDS = 0.5


def job_event_record(*, job: Job, event_type: str) -> JobEvent | None:
    """Log the job's event in the caller's transaction (None: a progress event coalesced away)
    and wake the waiters once it commits. The body is the webhook's, byte for byte.

    A progress event replaces the job's earlier ones: the log keeps a job's latest progress
    only. Each carries the whole job (payload, metadata), and kept one a second they made the
    log grow with how long the job ran, not with what was submitted: a `long_running_task` of
    an hour at its caps logged 3,600 of 18 KB, 65 MB kept JOB_RETENTION_DAYS, counted in no
    quota (JOB_PAYLOAD_QUOTA_BYTES_PER_CLIENT counts the job once). A stream catching up gets
    the latest progress, as one reading a coalesced job gets the one that stayed."""
    now = timezone.now()
    earlier = None
    if event_type == "job.progress":
        earlier = JobEvent.objects.filter(job_id=job.id, event_type=event_type).order_by("-id").values_list(
            "id", "created_at"
        ).first()
        if earlier and now - earlier[1] < timedelta(seconds=PROGRESS_EVENT_MIN_INTERVAL_SECONDS):
            return None
    sql.owner_events_lock(job.owner_id)
    event = JobEvent.objects.create(
        job_id=job.id, owner_id=job.owner_id, job_name=job.job_name, event_type=event_type,
        body=event_body(event_type=event_type, data=job_representation(job), at=now).decode(),
        created_at=now,
    )
    if earlier:
        # Every earlier one (one, but for a log written before this rule), by `jobevent_job`:
        # the caller holds the job's row, so no other event of it is being written.
        JobEvent.objects.filter(job_id=job.id, event_type=event_type, id__lt=event.id).delete()
    job_id, owner_id = job.id, job.owner_id
    transaction.on_commit(
        lambda: wakeups.job_event_publish(job_id=job_id, owner_id=owner_id, event_type=event_type)
    )
    return event


def job_events_after(*, job_id: uuid.UUID, after_id: int) -> QuerySet[JobEvent]:
    """The job's events after `after_id`, oldest first (ids grow within a job: each is written
    under its job's row lock)."""
    return JobEvent.objects.filter(job_id=job_id, id__gt=after_id).order_by("id")


def job_event_latest(*, job_id: uuid.UUID) -> JobEvent | None:
    return JobEvent.objects.filter(job_id=job_id).order_by("-id").first()


def job_event_last_id(*, job_id: uuid.UUID) -> int:
    """The id of the job's latest event (0: none)."""
    return JobEvent.objects.filter(job_id=job_id).order_by("-id").values_list("id", flat=True).first() or 0


def owner_events_after(*, owner_id: uuid.UUID, after_id: int, job_name: str = "") -> QuerySet[JobEvent]:
    """The owner's events after `after_id` (of `job_name` only, when given), oldest first.

    The owner is compared through a subquery on its row, as in `owner_event_last_id`: with the
    id written in, a client with most of the events and a `job_name` the others' jobs had was
    planned as a walk of the primary key from `after_id`, through every other client's events
    since (200,000 rows, 108 ms, at two million jobs)."""
    owner = Subquery(Client.objects.filter(pk=owner_id).values("pk"))
    events = JobEvent.objects.filter(owner_id=owner, id__gt=after_id)
    if job_name:
        events = events.filter(job_name=job_name)
    return events.order_by("id")


def owner_event_id_after(*, owner_id: uuid.UUID, after_id: int, count: int) -> int | None:
    """The id of the owner's `count`-th event after `after_id` (None: it has fewer), read from
    `jobevent_owner` alone: how far a read of the owner's events filtered by job name may look
    (`owner_events_of_name`), so that it looks through `count` of them at most."""
    owner = Subquery(Client.objects.filter(pk=owner_id).values("pk"))
    ids = JobEvent.objects.filter(owner_id=owner, id__gt=after_id).order_by("id").values_list("id", flat=True)
    return next(iter(ids[count - 1:count]), None)


def owner_events_of_name(
    *, owner_id: uuid.UUID, after_id: int, up_to: int, count: int, job_name: str
) -> QuerySet[JobEvent]:
    """The owner's events of `job_name` among its first `count` events after `after_id` up to the
    id `up_to`, oldest first: those ids read from `jobevent_owner` first, then the rows they
    name. Given the range of ids beside the owner, PostgreSQL walked the primary key (or the
    whole table) across it, through every other client's events in the range."""
    owner = Subquery(Client.objects.filter(pk=owner_id).values("pk"))
    # The LIMIT also keeps the ids a subquery of their own: without one PostgreSQL joins them to
    # the rows, and plans the range beside the owner again.
    ids = JobEvent.objects.filter(owner_id=owner, id__gt=after_id, id__lte=up_to).order_by("id").values("id")[:count]
    return JobEvent.objects.filter(id__in=ids, job_name=job_name).order_by("id")


class TextBytes(Func):
    """The size in bytes of a text column's value. PostgreSQL reads it from the value's header
    (the size it had before compression, for a value stored compressed or apart): the value is
    neither fetched nor decompressed to answer it."""

    function = "OCTET_LENGTH"
    output_field = IntegerField()

    def as_sqlite(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        # Embedded mode: SQLite has no OCTET_LENGTH before 3.43.
        return self.as_sql(compiler, connection, template="LENGTH(CAST(%(expressions)s AS BLOB))", **extra)


def events_within(events: QuerySet[JobEvent], *, count: int, max_bytes: int) -> QuerySet[JobEvent]:
    """The first `count` of `events` by id, as far as their bodies hold `max_bytes`: each event
    whose bodies before it hold fewer (the first, whatever its size), oldest first, with `upto`,
    the bytes of the bodies up to it, its own included. A stream reads its events in such
    batches: counted only, 500 events of `save_task_result_test_task` jobs with 64 KiB payloads
    (each event carries the payload, a final one the result too) were about 50 MB, held by the
    stream (and again as the chunk it writes) for as long as its client took to read them, for
    ever when it reads none."""
    ids = events.order_by("id").values("id")[:count]
    size = TextBytes("body")
    return (
        JobEvent.objects.filter(id__in=ids)
        .annotate(upto=Window(Sum(size), order_by=F("id").asc()))
        .filter(upto__lt=size + max_bytes)
        .order_by("id")
    )


def owner_event_last_id(*, owner_id: uuid.UUID) -> int:
    """The id of the owner's latest event (0: none), where a stream opened without a
    Last-Event-ID starts.

    Asked of the client's row, as a subquery on the client's id: PostgreSQL then plans it for
    any one client, and walks `jobevent_owner` back from the client's last entry. Asked with the
    id written in, it planned by that client's share of the table: for a client with most of
    the events it walked the whole table's primary key back from the newest event, through
    every other client's events since its own last one (33,290 rows, 18 ms, after three idle
    days at two million jobs), however many those were (docs/reliability.md, "One client's
    data, another's cost")."""
    latest = JobEvent.objects.filter(owner_id=OuterRef("pk")).order_by("-id").values("id")[:1]
    return Client.objects.filter(pk=owner_id).values_list(Subquery(latest), flat=True).first() or 0
