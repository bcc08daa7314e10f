"""The operators' reads, across every client (unlike jobs/selectors.py, which is always one
client's): jobs by status, what is stuck, what failed, the queues and the workers. Each read is
bounded and served by an index (jobs' job_active_since and job_finished, the workers' seen_at).

"The last hour" of jobs by status means: the jobs not final now (PENDING, STARTED, RETRY), and
those that reached a final status in the last hour; /metrics' jobapi_jobs reads the same count,
made at most once in 15 s by a process (console/counted.py).
"""
from __future__ import annotations

from collections import Counter
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import BooleanField, Case, Count, F, Max, Q, Value, When
from django.db.models.fields.json import KeyTransform
from django.db.models.functions import Coalesce, Now

from console.counted import Counted, Snapshot
from console.models import WorkerHeartbeat
from console.services import LOST_AFTER_SECONDS
from core.db import reads_bounded
from core.queues import queue_depths
from jobs.models import Job
from jobs.registry import job_type_known, job_types_all
from jobs.shapes import error_shown, error_type

WINDOW = timedelta(hours=1)
# A job's columns the console never shows: a client's payload and result can each be as large as
# a request body (API_MAX_BODY_BYTES), and the page reads up to 500 failed jobs every refresh.
_LARGE_FIELDS = ("payload", "result")
Status = Job.Status
STATUSES = [choice.value for choice in Status]

# Longest an operator's read waits for a table's lock, in seconds: only a migration's ALTER
# TABLE, a LOCK TABLE, a TRUNCATE or a VACUUM FULL takes one that blocks a read, and it may hold
# it for minutes; a read that waited gave up the same, later.
LOCK_WAIT_SECONDS = 0.25


def operator_reads_bounded() -> AbstractContextManager[None]:
    """The console's and /metrics' database reads, each bounded (OPERATOR_READ_TIMEOUT_SECONDS,
    LOCK_WAIT_SECONDS): each holds its API process's request turn (one by default) and a database
    connection while it waits, so a scrape or a refresh waiting on a lock held every request of
    its process, health checks too, for as long as the lock was held, and those of the next
    scrapes (every 15 s) with them."""
    seconds = settings.OPERATOR_READ_TIMEOUT_SECONDS
    return reads_bounded(seconds=seconds, lock_wait_seconds=min(seconds, LOCK_WAIT_SECONDS))


def _jobs_by_type_and_status(*, now: datetime) -> dict[tuple[str, str], int]:
    counts: dict[tuple[str, str], int] = {}
    active = Job.objects.filter(status__in=list(Job.ACTIVE_STATUSES))
    finished = Job.objects.filter(finished_at__gte=now - WINDOW, status__in=list(Job.FINAL_STATUSES))
    for rows in (active, finished):
        for row in rows.values("job_name", "status").annotate(n=Count("pk")).order_by():
            counts[(row["job_name"], row["status"])] = row["n"]
    return counts


# Each unfinished job's row is read (the job's name is not in job_active_since): 40-52 ms at
# 100,000 waiting, 425-632 ms at a million (console/counted.py).
_jobs_counted = Counted(_jobs_by_type_and_status)


def jobs_by_type_and_status(*, now: datetime) -> Snapshot[dict[tuple[str, str], int]]:
    """(job_name, status) -> jobs: not final now, or finished in the last hour before the count,
    as counted in the last COUNTED_FOR_SECONDS (console/counted.py), with when."""
    return _jobs_counted.read(now=now)


def unfinished_of_unknown_types(counts: dict[tuple[str, str], int]) -> int:
    """The unfinished jobs, among `counts` (jobs_by_type_and_status), of types this code does not
    know: a deploy removed or renamed their type, or one still rolling out adds it. Read from the
    counts the console and /metrics make anyway, at no query of its own."""
    return sum(count for (name, status), count in counts.items()
               if status in Job.ACTIVE_STATUSES and not job_type_known(name))


def jobs_by_status(counts: dict[tuple[str, str], int]) -> dict[str, int]:
    """The jobs among `counts` (jobs_by_type_and_status) in each status."""
    totals = dict.fromkeys(STATUSES, 0)
    for (_, status), count in counts.items():
        totals[status] += count
    return totals


def jobs_oldest_pending(*, now: datetime, limit: int = 10) -> list[Job]:
    """The jobs waiting longest to start, counted from when they fell due (their run_at, for a
    scheduled job); `waiting_since` on each. The first `limit` entries of job_active_since's
    pending jobs, which it orders so: due by now, then the oldest (every pending job was read
    and sorted for them on each scrape and refresh: 52-56 ms for 100,000 waiting, or a Seq Scan
    of a million jobs; docs/reliability.md, "The operators' reads")."""
    return list(
        Job.objects.filter(status=Status.PENDING)
        .annotate(waiting_since=Coalesce("run_at", "created_at"))
        .filter(waiting_since__lte=now)
        .select_related("owner")
        .defer(*_LARGE_FIELDS)
        .order_by("waiting_since", "pk")[:limit]
    )


def oldest_pending_age_seconds(*, now: datetime) -> float:
    oldest = jobs_oldest_pending(now=now, limit=1)
    return max(0.0, (now - oldest[0].waiting_since).total_seconds()) if oldest else 0.0  # type: ignore[attr-defined]


def jobs_longest_running(*, limit: int = 10) -> list[Job]:
    """The jobs on a worker longest (STARTED, or RETRY between two tries)."""
    return list(
        Job.objects.filter(status__in=list(Job.RUNNING_STATUSES), started_at__isnull=False)
        .select_related("owner")
        .defer(*_LARGE_FIELDS)
        .order_by("started_at", "pk")[:limit]
    )


@dataclass(frozen=True)
class ErrorRow:
    error_type: str
    count: int
    last_at: datetime
    last_message: str
    last_job_id: str


@dataclass(frozen=True)
class Failures:
    finished: int
    failed: int
    # Per job type: (finished, failed), of the last hour.
    by_type: dict[str, tuple[int, int]]
    top_errors: list[ErrorRow]

    @property
    def rate(self) -> float | None:
        return self.failed / self.finished if self.finished else None


# The most frequent errors of the last hour the console shows.
TOP_ERRORS = 5
# The type shown for failed jobs without an error (their GET shows `error` null).
NO_ERROR_TYPE = "(none)"


# The groups of raw `error -> 'type'` read to merge into shaped types: past it, the rarest.
RAW_ERROR_TYPES_READ = 1000


def _top_errors(*, now: datetime) -> list[ErrorRow]:
    """The last hour's most frequent error types, each with its latest job's message, both as
    the job's own GET shows them (jobs.shapes). The query groups by the stored `error -> 'type'`
    (a JSON value: NULL for an error that is no object) and by whether there is an error at all;
    groups that read the same once shaped (the type 5 and "5"; a bare string, a missing, null or
    empty type, and "unknown") are merged here. Grouped by the stored text, an object type never
    found its latest message, and "unknown" showed as several rows."""
    failed_jobs = Job.objects.filter(finished_at__gte=now - WINDOW, status=Status.FAILURE)
    no_error = Q(error__isnull=True) | Q(error=None)  # SQL NULL, or JSON null
    groups = (
        failed_jobs.annotate(
            raw_type=KeyTransform("type", "error"),
            has_error=Case(When(no_error, then=Value(False)), default=Value(True), output_field=BooleanField()),
        )
        .values("raw_type", "has_error").annotate(n=Count("pk"), last_at=Max("finished_at"))
        .order_by("-n", "-last_at")[:RAW_ERROR_TYPES_READ]
    )
    counts: Counter[str] = Counter()
    last_at: dict[str, datetime] = {}
    for group in groups:
        shaped = error_type({"type": group["raw_type"]}) if group["has_error"] else NO_ERROR_TYPE
        counts[shaped] += group["n"]
        last_at[shaped] = max(last_at.get(shaped, group["last_at"]), group["last_at"])
    latest: dict[str, Job] = {}
    for job in failed_jobs.only("pk", "error", "finished_at").order_by("-finished_at")[:500]:
        latest.setdefault(error_type(job.error) or NO_ERROR_TYPE, job)
    rows = []
    for shaped, count in sorted(counts.items(), key=lambda item: (-item[1], -last_at[item[0]].timestamp()))[:TOP_ERRORS]:
        job = latest.get(shaped)
        shown = error_shown(job.error) if job else None
        rows.append(ErrorRow(
            error_type=shaped, count=count, last_at=last_at[shaped],
            last_message=shown["message"][:300] if shown else "",
            last_job_id=str(job.pk) if job else "",
        ))
    return rows


# Each job failed in the last hour is read to group them by error type: 50-58 ms at 100,000 (a
# failure storm), on each refresh of each open console (console/counted.py).
_errors_counted = Counted(_top_errors)


def failures(*, now: datetime, counts: dict[tuple[str, str], int]) -> Failures:
    """The failure rate of the jobs that finished in the last hour (FAILURE of all final ones,
    from `counts`: jobs_by_type_and_status) and their most frequent errors by error.type, as
    counted in the last COUNTED_FOR_SECONDS."""
    by_type: dict[str, tuple[int, int]] = {}
    for (job_name, status), count in counts.items():
        if status in Job.FINAL_STATUSES:
            finished, failed = by_type.get(job_name, (0, 0))
            by_type[job_name] = (finished + count, failed + (count if status == Status.FAILURE else 0))
    return Failures(
        finished=sum(f for f, _ in by_type.values()), failed=sum(f for _, f in by_type.values()),
        by_type=by_type, top_errors=_errors_counted.read(now=now).value,
    )


# --- Workers and queues ----------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerRow:
    worker: WorkerHeartbeat
    state: str  # "up", "stopped" (shut down cleanly) or "lost" (stopped reporting)
    silent_for: timedelta  # since its last beat (or its shutdown mark)
    up_for: timedelta  # since its run's first beat


def workers_seen() -> list[WorkerRow]:
    """The workers heard from in the last hour, each with its state, judged by the database's
    clock, which stamps their beats (console/services.py worker_seen): not this process's, nor
    the worker host's, so that no skew between hosts shows a worker lost or keeps one up, or
    up for longer or shorter than it is. A run that started before `up_since` was kept (a worker
    not yet upgraded) is up since its `started_at`, by its host's clock, as it was."""
    rows = []
    workers = WorkerHeartbeat.objects.filter(seen_at__gte=Now() - WINDOW).annotate(
        silent_for=Now() - F("seen_at"), up_for=Now() - Coalesce("up_since", "started_at"),
    )
    for worker in workers.order_by("hostname"):
        silent_for: timedelta = worker.silent_for  # type: ignore[attr-defined]  # the annotation
        up_for: timedelta = worker.up_for  # type: ignore[attr-defined]  # the annotation
        if worker.stopped_at is not None:
            state = "stopped"
        elif silent_for.total_seconds() > LOST_AFTER_SECONDS:
            state = "lost"
        else:
            state = "up"
        rows.append(WorkerRow(worker, state, silent_for, up_for))
    return rows


def queue_names() -> list[str]:
    """Every queue a task is routed to: the default, the routes' and the job types'."""
    routed = {route["queue"] for route in settings.CELERY_TASK_ROUTES.values()}
    return sorted({settings.CELERY_TASK_DEFAULT_QUEUE, *routed, *(t.queue for t in job_types_all())})


@dataclass(frozen=True)
class QueueRow:
    name: str
    messages: int | None  # None: the broker did not answer
    consumers: int


def queues(*, workers: list[WorkerRow], broker_up: bool = True) -> list[QueueRow]:
    """Each queue's messages (unless the broker is known to be down) and consumers."""
    names = queue_names()
    consumers = Counter(queue for row in workers if row.state == "up" for queue in row.worker.queues)
    depths = queue_depths(names) if broker_up else {}
    return [QueueRow(name, depths.get(name), consumers[name]) for name in names]
