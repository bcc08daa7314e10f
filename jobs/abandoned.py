"""The abandoned-job rule (the periodic `jobs.fail_abandoned`): failing the jobs that no worker
runs any more (it vanished), nor ever will (their type is gone)."""
from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import QuerySet
from django.db.models.functions import Coalesce
from django.utils import timezone

from core.rows_apart import PAGE_ROWS, RowsApart
from jobs.models import Job
from jobs.registry import job_types_all
from jobs.transitions import job_finish

Status = Job.Status


def jobs_fail_abandoned(*, page_rows: int = PAGE_ROWS) -> int:
    """Fail jobs left STARTED/RETRY by a worker that vanished for good; how many.

    A worker lost mid-job has its message redelivered by the broker after the visibility
    timeout; a job still unfinished after that plus all its steps' hard time limits, counted from
    when its current step began (its first start, or its latest handed-over step's start), can no
    longer be running anywhere, so it fails with error.type "worker_lost". A job whose next step
    (or retry) was handed over and has not started is not lost: its message waits in the broker
    (behind others, or for a short retry's time), or it waits for the sweeper, which publishes
    a retry once due, a step the broker refused, and either again if it goes unstarted for
    JOB_DISPATCH_LOST_AFTER_SECONDS (its worker was killed before it could publish it;
    jobs.dispatch.job_steps_release_stranded).

    Each job is failed apart: one whose finish raises is logged (ERROR, with its id) and left for
    the next run, the others failed all the same; the run then ends in RowsFailed. Each query is
    read `page_rows` at a time from a random key, so that the others are reached however many
    raise (core.rows_apart.MOST_ROWS_READ of a query a run: core/rows_apart.py).
    """
    now = timezone.now()
    apart = RowsApart(task="jobs.fail_abandoned", what="job")
    failed = 0
    for job_type in job_types_all():
        limit_seconds = (
            settings.CELERY_BROKER_VISIBILITY_TIMEOUT_SECONDS
            + len(job_type.steps) * job_type.time_limit_seconds
            + 60
        )
        stale = (
            Job.objects.filter(job_name=job_type.name, status__in=Job.RUNNING_STATUSES)
            .exclude(next_step__isnull=False, step_started_at__isnull=True)
            .alias(run_from=Coalesce("step_started_at", "started_at"))
            .filter(run_from__lt=now - timedelta(seconds=limit_seconds))
            .values_list("pk", flat=True)
        )
        failed += apart.pages(stale, _worker_lost, page_rows=page_rows)
    failed += _jobs_of_unknown_types_fail(now, apart=apart, page_rows=page_rows)
    apart.end()
    return failed


def _worker_lost(job_id: uuid.UUID) -> int:
    return job_finish(
        job_id=job_id,
        status=Status.FAILURE,
        error={"type": "worker_lost", "message": "The worker running this job was lost."},
    )


def _jobs_of_unknown_types_fail(now: datetime, *, apart: RowsApart, page_rows: int) -> int:
    """Fail the unfinished jobs of types this code does not know (a deploy removed or renamed
    the type while they were queued, scheduled or running): none can run here, and they held
    their client's places under its caps for good (with a running cap of 1, its every later job
    waited behind one). Only once no worker that knew the type (an older one, through a rolling
    deploy) can still hold them: started, or handed to the broker (the sweeper keeps its claim of
    a waiting one due longer ago than that: jobs.dispatch), longer than the broker's visibility
    timeout ago, plus a minute. Read through the running jobs and those in the broker only
    (job_active_since, job_in_broker), not every job waiting."""
    held_before = now - timedelta(seconds=settings.CELERY_BROKER_VISIBILITY_TIMEOUT_SECONDS + 60)
    unknown = jobs_of_unknown_types()
    running = unknown.filter(status__in=Job.RUNNING_STATUSES).alias(
        run_from=Coalesce("step_started_at", "started_at")
    ).filter(run_from__lt=held_before)
    in_broker = unknown.filter(status=Status.PENDING, dispatched_at__lt=held_before)
    return sum(
        apart.pages(stale.values_list("pk", "job_name"), _type_unknown, key=lambda row: row[0], page_rows=page_rows)
        for stale in (running, in_broker)
    )


def _type_unknown(row: tuple[uuid.UUID, str]) -> int:
    job_id, job_name = row
    return job_finish(job_id=job_id, status=Status.FAILURE, error=job_type_unknown_error(job_name))


def jobs_of_unknown_types() -> QuerySet[Job]:
    """The jobs of types this code does not know: this rule's, and an operator's to fail at once
    (jobs.unknown_types)."""
    return Job.objects.exclude(job_name__in=[job_type.name for job_type in job_types_all()])


def job_type_unknown_error(job_name: str) -> dict[str, str]:
    """The error of a job failed because this code does not know its type: by this rule, or by an
    operator (`manage.py jobs_fail_unknown_types`), so a client sees the one error either way."""
    return {
        "type": "job_type_unknown",
        "message": f"This job's type, {job_name}, is not registered any more (removed or renamed): it cannot run.",
    }
