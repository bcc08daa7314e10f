"""Pruning what the jobs app keeps past its retention: finished jobs, persisted results,
idempotency keys and past days' model usage (run by the periodic task `jobs.prune`). Batched, so
one run never locks a big slice of a table; a run that stops at `max_batches` leaves the rest to
the next, which it queues (jobs.tasks.jobs_prune). And deleting jobs on an operator's request (the
admin)."""
from __future__ import annotations

import uuid
from collections.abc import Collection, Mapping
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from core.db import delete_in_batches
from jobs.counts import job_counts_lock
from jobs.idempotency import idempotency_keys_prune
from jobs.model_budget import budget_day, model_usage_prune
from jobs.models import Job, JobResult

# Rows one batch deletes, and batches of a kind one run deletes at most (read at each run).
PRUNE_BATCH_SIZE = 1000
PRUNE_MAX_BATCHES = 100
# Days of model usage kept besides today's, the only one the budget reads: a few, for an
# operator looking into yesterday's spending.
MODEL_USAGE_KEPT_DAYS = 7


def jobs_finished_prune(
    *, older_than: datetime, batch_size: int = PRUNE_BATCH_SIZE, max_batches: int = PRUNE_MAX_BATCHES
) -> int:
    """Delete jobs that finished before `older_than` (their idempotency keys cascade). A batch
    locks its jobs, skipping those another deletion holds (left to the next run), then their
    owners' count rows in owner order (job_counts_lock), as jobs_delete does."""
    finished = Job.objects.filter(status__in=Job.FINAL_STATUSES, finished_at__lt=older_than)
    return delete_in_batches(finished, batch_size=batch_size, max_batches=max_batches, skip_locked=True,
                             also_lock=lambda ids: job_counts_lock(job_ids=ids))


def job_results_prune(
    *, older_than: datetime, batch_size: int = PRUNE_BATCH_SIZE, max_batches: int = PRUNE_MAX_BATCHES
) -> int:
    """Delete persisted results created before `older_than` (a result outlives its job). A batch
    locks its results, skipping those another transaction holds (left to the next run): a
    deletion of their jobs locks them by id (job_counts_lock), and the batch's DELETE, taking
    them in the order it meets them, held one the deletion waited for while it waited for
    another the deletion held, a deadlock."""
    old = JobResult.objects.filter(created_at__lt=older_than)
    return delete_in_batches(old, batch_size=batch_size, max_batches=max_batches, skip_locked=True)


def jobs_delete(*, job_ids: Collection[uuid.UUID]) -> None:
    """Delete the jobs, running or not, with their events and Idempotency-Keys (their persisted
    results stay, without their job). Each is locked first, as a transition locks it: one under
    way commits first and what it added goes too; a later one waits, and finds its job gone.
    Unlocked, a worker's step that ended between the deletion's reads of the jobs' events and
    its delete of the jobs left an event it had not read, and the deletion failed at commit on
    its foreign key (the admin's 500, the job left in place). Then their owners' count rows, in
    owner order (job_counts_lock)."""
    with transaction.atomic():
        list(Job.objects.filter(pk__in=job_ids).order_by("pk").select_for_update().values_list("pk", flat=True))
        job_counts_lock(job_ids=job_ids)
        # Their ids only: Django reads every column of the rows it deletes (payloads and results).
        Job.objects.filter(pk__in=job_ids).only("pk").delete()


def jobs_retention_apply(*, now: datetime | None = None) -> dict[str, int]:
    """Prune the jobs app's rows past their retention (settings); counts per kind."""
    now = now or timezone.now()
    days = timedelta(days=1)
    batches = {"batch_size": PRUNE_BATCH_SIZE, "max_batches": PRUNE_MAX_BATCHES}
    return {
        "jobs": jobs_finished_prune(older_than=now - settings.JOB_RETENTION_DAYS * days, **batches),
        "results": job_results_prune(older_than=now - settings.JOB_RESULT_RETENTION_DAYS * days, **batches),
        "idempotency_keys": idempotency_keys_prune(
            older_than=now - timedelta(seconds=settings.IDEMPOTENCY_KEY_TTL_SECONDS), **batches
        ),
        "model_usage": model_usage_prune(before=budget_day(now) - MODEL_USAGE_KEPT_DAYS * days, **batches),
    }


def retention_more_left(counts: Mapping[str, int]) -> bool:
    """Whether a run (`jobs_retention_apply`'s counts) stopped at its cap for some kind, so may
    have left rows past their retention."""
    return any(count >= PRUNE_BATCH_SIZE * PRUNE_MAX_BATCHES for count in counts.values())
