"""The unfinished jobs of types this code does not know, at an operator's word (`manage.py
jobs_fail_unknown_types`): counted, and failed once the operator knows the deploy that removed or
renamed their type is done. The service cannot tell a type removed from one a deploy still rolling
out adds (this process the older), so on its own it fails them only through the abandoned-job
rule, CELERY_BROKER_VISIBILITY_TIMEOUT_SECONDS (2 h) after they last went to a worker, holding
their client's places under its caps meanwhile (jobs.abandoned)."""
from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings
from django.db.models import Count, QuerySet

from jobs import dispatch
from jobs.abandoned import job_type_unknown_error, jobs_of_unknown_types
from jobs.models import Job
from jobs.transitions import job_finish

# Jobs read at a time while failing them: each is then failed in a transaction of its own.
FAIL_BATCH = 500


@dataclass(frozen=True)
class UnknownTypeJobs:
    """A client's unfinished jobs of one type this code does not know."""

    job_name: str
    owner_id: uuid.UUID
    owner_name: str
    jobs: int


def _unfinished_of_unknown_types() -> QuerySet[Job]:
    # Read through job_active_since: every unfinished job's row, the name not being in the index;
    # an operator's look, made once, not a periodic one (the console reads its count from the
    # jobs by type and status it counts anyway).
    return jobs_of_unknown_types().filter(status__in=list(Job.ACTIVE_STATUSES))


def jobs_of_unknown_types_counted() -> list[UnknownTypeJobs]:
    """The unfinished jobs of types this code does not know, by type and client."""
    rows = (
        _unfinished_of_unknown_types()
        .values("job_name", "owner_id", "owner__name")
        .annotate(jobs=Count("pk"))
        .order_by("job_name", "owner__name", "owner_id")
    )
    return [
        UnknownTypeJobs(job_name=row["job_name"], owner_id=row["owner_id"], owner_name=row["owner__name"],
                        jobs=row["jobs"])
        for row in rows
    ]


def jobs_of_unknown_types_fail(
    *,
    batch: int = FAIL_BATCH,
    progress: Callable[[int], None] = lambda failed: None,
    stop: Callable[[], bool] = lambda: False,
) -> int:
    """Fail every unfinished job of a type this code does not know, as the abandoned-job rule
    fails one (the same error, through job_finish: its client's counts are freed, its job.failed
    callback sent); how many were failed. Safe beside live traffic: each is failed by a
    conditional UPDATE that locks its row, so a job that reached a final state meanwhile keeps it,
    and one still running in an older worker finishes there to no effect. Read `batch` at a time
    in the order of their ids, from where the last batch ended, so no job is read twice.

    `progress` is told the count failed so far after each batch; `stop` is asked before each job,
    and once it says so the rest are left as they are: each job is failed in a transaction of its
    own, so a stop between two leaves every job either failed (callback and all) or untouched, and
    a run again takes up the rest."""
    failed = 0
    after: uuid.UUID | None = None
    while True:
        unfinished = _unfinished_of_unknown_types().order_by("pk")
        if after is not None:
            unfinished = unfinished.filter(pk__gt=after)
        page = list(unfinished.values_list("pk", "job_name", "owner_id")[:batch])
        owners: set[uuid.UUID] = set()
        try:
            for job_id, job_name, owner_id in page:
                if stop():
                    return failed
                if job_finish(job_id=job_id, status=Job.Status.FAILURE, error=job_type_unknown_error(job_name),
                              publish_waiting=False):
                    failed += 1
                    owners.add(owner_id)
        finally:
            # Their places under the running cap freed, each owner's waiting jobs published once a
            # batch: once a job, the publish read the owner's waiting jobs every time, and logged
            # a warning for each of them of a type unknown (a run's every job, 500 times a batch).
            for owner_id in owners if settings.JOB_MAX_RUNNING_PER_CLIENT else ():
                dispatch.jobs_publish_waiting(owner_id=owner_id)
        if len(page) < batch:
            return failed
        progress(failed)
        after = page[-1][0]
