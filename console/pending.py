"""The jobs waiting for a worker, oldest first (/metrics' jobapi_oldest_pending_job_age_seconds, which
JobsPendingTooLong watches, and the console's list), and not those a client's own running jobs hold
at its running cap (JOB_MAX_RUNNING_PER_CLIENT): by design those wait for one of them to end (the
cap keeps one client from taking every worker), and counted, one client's hour-long job fired the
alert after 10 minutes though every other client's jobs started at once.

A pending job is either
- in the broker (handed to it, `dispatched_at` set): no worker has taken its message, whatever its
  client's cap (a worker that takes it starts it, or puts it back to wait for dispatch when its
  client is at its cap). It waits since it was handed over: the oldest is job_in_broker's first
  entry. A job held at its cap is handed over again when its client's running job ends
  (jobs.transitions.job_finish), so it counts from then, not from when it fell due; one past
  JOB_DISPATCH_LOST_AFTER_SECONDS is taken for lost and handed over again (jobs.dispatch), and
  counts from then too;
- or waiting for dispatch (`dispatched_at` NULL): due, its client under its cap, it waits for the
  sweeper (every few seconds; longer: beat or the broker is down), since it fell due (its run_at,
  for a scheduled job). Held at its cap, it is not counted. Read like the sweeper's claim
  (jobs/sql.py jobs_waiting_claim): the owners with a job waiting, each found by one probe of
  job_waiting past the one before (a recursive CTE), its count row by key, and its oldest entries
  when it is under its cap; a client's backlog held at its cap is not read. Through
  job_active_since, each held job due before the first one waiting was read, and dropped: a client
  with 100,000 held behind a long job, every one of them at each scrape and refresh (32 ms, and a
  Seq Scan of every client's count row; docs/reliability.md, "The operators' reads").

Hand-written SQL: the ORM has no recursive CTE nor LATERAL join. On SQLite (no load to speak of)
the same choice through the ORM.
"""
from __future__ import annotations

from datetime import datetime

from django.conf import settings
from django.db import connection
from django.db.models import Exists, F, OuterRef, QuerySet
from django.db.models.functions import Coalesce

from jobs.models import Job, JobCounts
from jobs.sql import JOB_COUNTS

# A job's columns never shown with the oldest pending: a client's payload and result can each be as
# large as a request body.
LARGE_FIELDS = ("payload", "result")
_JOBS = Job._meta.db_table
_WAITING = "j.status = 'PENDING' AND j.dispatched_at IS NULL"
# Each client's look names its owner as a range of one (BETWEEN), not an equality, and is
# ordered by owner first: job_waiting gives that order, job_active_since (status, then when due)
# does not. With `owner_id = ...`, PostgreSQL takes the owner's order for granted and took either
# index, on a guess at the owners' number: through job_active_since it read every pending job due
# before the client's first (a held client's backlog with them).
_WAITING_FOR_DISPATCH = f"""WITH RECURSIVE waiting_owners (owner_id) AS (
        (SELECT j.owner_id FROM {_JOBS} j WHERE {_WAITING} ORDER BY j.owner_id LIMIT 1)
        UNION ALL
        SELECT (SELECT j.owner_id FROM {_JOBS} j WHERE {_WAITING} AND j.owner_id > o.owner_id
                ORDER BY j.owner_id LIMIT 1)
        FROM waiting_owners o WHERE o.owner_id IS NOT NULL
    )
    SELECT w.id, w.due FROM (SELECT owner_id FROM waiting_owners WHERE owner_id IS NOT NULL) o
    LEFT JOIN LATERAL (SELECT c.running FROM {JOB_COUNTS} c WHERE c.owner_id = o.owner_id LIMIT 1) c ON TRUE
    CROSS JOIN LATERAL (
        SELECT j.id, COALESCE(j.run_at, j.created_at) AS due FROM {_JOBS} j
        WHERE j.owner_id BETWEEN o.owner_id AND o.owner_id AND {_WAITING} AND COALESCE(j.run_at, j.created_at) <= %(now)s
            AND (%(cap)s = 0 OR COALESCE(c.running, 0) < %(cap)s)
        ORDER BY j.owner_id, COALESCE(j.run_at, j.created_at) LIMIT %(limit)s
    ) w
    ORDER BY w.due, w.id LIMIT %(limit)s"""


def _shown(jobs: QuerySet[Job]) -> QuerySet[Job]:
    return jobs.select_related("owner").defer(*LARGE_FIELDS)


def _waiting_for_dispatch(*, now: datetime, cap: int, limit: int) -> list[Job]:
    pending = Job.objects.filter(status=Job.Status.PENDING, dispatched_at__isnull=True)
    if connection.vendor != "postgresql":
        waiting = pending.annotate(waiting_since=Coalesce("run_at", "created_at")).filter(waiting_since__lte=now)
        if cap:
            waiting = waiting.filter(~Exists(JobCounts.objects.filter(owner_id=OuterRef("owner_id"), running__gte=cap)))
        return list(_shown(waiting).order_by("waiting_since", "pk")[:limit])
    with connection.cursor() as cursor:
        cursor.execute(_WAITING_FOR_DISPATCH, {"now": now, "cap": cap, "limit": limit})
        due = dict(cursor.fetchall())
    jobs = list(_shown(pending.filter(pk__in=list(due))))
    for job in jobs:
        job.waiting_since = due[job.pk]  # type: ignore[attr-defined]  # as the annotation on the others
    return jobs


def jobs_waiting_for_a_worker(*, now: datetime, limit: int) -> list[Job]:
    """The `limit` jobs waiting longest for a worker (see the module's docstring), oldest first,
    each with `waiting_since`: in the broker, since they were handed to it; waiting for dispatch,
    since they fell due."""
    in_broker = _shown(Job.objects.filter(status=Job.Status.PENDING, dispatched_at__isnull=False, dispatched_at__lte=now)
                       .annotate(waiting_since=F("dispatched_at"))).order_by("dispatched_at", "pk")[:limit]
    jobs = [*in_broker, *_waiting_for_dispatch(now=now, cap=settings.JOB_MAX_RUNNING_PER_CLIENT, limit=limit)]
    return sorted(jobs, key=lambda job: (job.waiting_since, job.pk))[:limit]  # type: ignore[attr-defined]
