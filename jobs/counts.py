"""Repairing the per-owner counts the caps read (JobCounts): counted again from the jobs and
results rows, for an operator who finds a client refused at a cap it is not at. And locking them
in one order before a deletion of jobs of several owners."""
from __future__ import annotations

import uuid
from collections.abc import Collection

from django.db import IntegrityError, transaction

from core.models import Client
from jobs import sql
from jobs.models import Job, JobCounts, JobResult


def job_counts_recount(*, owner_id: uuid.UUID) -> bool:
    """Write the owner's counts as its rows give them; whether they had drifted. The triggers
    keep them exact through every write of the jobs and results (the services, the admin, a
    cascade, SQL by hand), so only writes that bypass triggers make them drift: a restore or a
    replication with triggers off (`session_replication_role = replica`, `pg_restore
    --disable-triggers`), a TRUNCATE, an UPDATE of the counts by hand, a TRUNCATE of the counts
    (the row is made again). Counted up, a count locked its client out at its cap for good.

    Safe beside the client's traffic: the count row is locked first, and every transition's
    trigger takes that lock before its commit, so the counting (a later statement) sees each
    one committed already, or none of it, to which the transition then adds its own change."""
    lost = not JobCounts.objects.filter(owner_id=owner_id).exists()
    if lost:
        if not Client.objects.filter(pk=owner_id).exists():
            return False  # the client is gone (its row goes with it)
        # The row itself lost (a TRUNCATE of the counts, a restore of the clients without it):
        # made again, or a batch, which reads it, failed (a 500) for good. Committed before it is
        # locked and counted, as any row is: made in the counting's transaction, it was invisible
        # to a transition's trigger meanwhile, whose UPDATE found no row and so lost its change
        # (a job finishing while counted stayed running in its owner's count). A job's trigger
        # may make it at the same moment: then that one is counted.
        try:
            JobCounts.objects.bulk_create([JobCounts(owner_id=owner_id)], ignore_conflicts=True)
        except IntegrityError:
            return False  # the client deleted since: the command goes on to the next
    with transaction.atomic():
        counts = JobCounts.objects.select_for_update().filter(owner_id=owner_id).first()
        if counts is None:
            return False  # the client is gone (its row goes with it)
        counted = sql.owner_counts_counted(owner_id)
        fields = ["unfinished", "running", "result_bytes", "job_bytes"]
        if not lost and tuple(getattr(counts, field) for field in fields) == counted:
            return False
        for field, value in zip(fields, counted, strict=True):
            setattr(counts, field, value)
        counts.save(update_fields=fields)
    return True


def job_counts_lock(*, job_ids: Collection[uuid.UUID]) -> None:
    """Lock the count rows of the jobs' owners, in owner order, until the transaction ends: for a
    transaction deleting jobs of several owners, after it has locked the jobs (the order a
    transition takes a job and its count row). Each DELETE's trigger locks its owners' rows in
    owner order (jobs 0025), but Django deletes a hundred jobs a statement: a transaction deleting
    more took its owners' rows statement by statement, and two such (an operator's deletion in the
    admin, a batch of the prune) could each hold a row the other waited for, a deadlock.

    The jobs' persisted results first, which the deletion updates (their job set to NULL) after
    the count rows: a prune of results holds its results, then their count rows (its DELETE's
    trigger), and waited for the count rows a deletion of their jobs held while it waited for them."""
    # By id, in one order with every other deletion of jobs.
    list(JobResult.objects.filter(job__in=job_ids).order_by("pk").select_for_update().values_list("pk", flat=True))
    owners = Job.objects.filter(pk__in=job_ids).values("owner")
    list(JobCounts.objects.filter(owner__in=owners).order_by("owner_id").select_for_update().values_list("pk", flat=True))
