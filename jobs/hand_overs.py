"""A running job's steps after its first (and its retries): each handed over on the job's row
before its message is sent (jobs.tasks), and started by one message of that hand-over.

A hand-over is recorded, committed, then published: a broker that refuses the message leaves it
to the sweeper (jobs.dispatch.job_steps_publish_waiting), and a worker killed between the commit
and the publish leaves a hand-over with no message at all, which the sweeper takes for lost once
it has gone unstarted as long as a lost first message must (jobs.dispatch.job_steps_release_stranded).
"""
from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from django.db.models import Q
from django.db.models.functions import Now
from django.utils import timezone

from jobs import leases, sql, transitions
from jobs.models import Job


def job_step_hand_over(*, job_id: uuid.UUID, step: int, step_input: Any, dispatched_at: datetime) -> bool:
    """Record on the running job's row that its step `step` is due next, taking `step_input`,
    and is handed to the broker now (`dispatched_at`, which its message carries), not started
    yet: a message the broker refuses is then released for the sweeper (jobs.dispatch), not lost.
    False when the job is final, or `step` was handed over already (the step before it ran again,
    its message delivered again after its first run had ended): its message is sent already.

    False too when the job's cancel was requested as the step before ran, after that step last
    looked: the job ends canceled here. Handed over, it stayed STARTED, its place under its
    owner's running cap taken, until the step's message came (behind a queue, or the broker's
    outage), to be canceled only then."""
    handed = Job.objects.filter(pk=job_id, status__in=Job.RUNNING_STATUSES, cancel_requested=False).filter(
        Q(next_step__isnull=True) | Q(next_step__lt=step)
    )
    if handed.update(next_step=step, step_input=step_input, dispatched_at=dispatched_at, step_started_at=None,
                     step_heartbeat_at=None):
        return True
    if transitions.job_cancel_requested(job_id=job_id):
        # Not by_chain: the step handing over has taken its chain (jobs.tasks), tail and all.
        transitions.job_finish(job_id=job_id, status=Job.Status.REVOKED)
    return False


def job_step_start(*, job_id: uuid.UUID, step: int, dispatched_at: datetime | None, redelivered: bool) -> Job | None:
    """Start the job's handed-over step `step` for a message of the hand-over `dispatched_at`
    (the one the message carries): mark it started on the row, in one conditional UPDATE, so
    that another message of the same hand-over runs nothing while this one runs, and the sweeper
    no longer takes the message for lost (either finds the other's write done). The job, to run
    the step; None when it must not run (final, gone, or canceled: then ended REVOKED).

    Raises StaleMessage, having changed nothing, for a message of another hand-over (an earlier
    one, or one the sweeper replaced), or of a step another message started already, unless the
    broker `redelivered` it (or it is the task's own retry, after the database failed its run):
    its own earlier run was cut off (a killed worker), and it runs again, as a first step's
    message delivered again does (jobs.transitions.job_start), once that run's lease is free
    (jobs.leases: a run still alive, its worker only cut off from the broker, keeps it; raises
    StepLeased meanwhile). Either takes the lease in the UPDATE that starts the step, the
    redelivered one only if it is free: a copy refused it writes nothing, where its
    step_started_at restarted the abandoned-job rule's clock at each look (jobs.abandoned)."""
    condition, params = sql.in_hand_over(step, dispatched_at, started_or_not=redelivered)
    if redelivered:
        free, free_params = leases.step_lease_free_sql()
        condition, params = f"{condition} AND {free}", [*params, *free_params]
    started = sql.job_update_if(job_id, condition=condition, params=params, step_started_at=timezone.now(),
                                step_heartbeat_at=leases.database_now())
    if started is not None:
        return started
    job = Job.objects.annotate(database_now=Now()).filter(pk=job_id).first()
    if job is None or job.is_final:
        return None
    if job.cancel_requested:
        transitions.job_finish(job_id=job_id, status=Job.Status.REVOKED, by_chain=True)
        return None
    if job.next_step is None:  # a message published before steps were handed over on the row: it says none
        leases.step_lease_take(job_id=job_id)
        return job
    if redelivered and dispatched_at is not None and (job.next_step, job.dispatched_at) == (step, dispatched_at):
        raise leases.step_leased(held=job.step_heartbeat_at, now=job.database_now)  # its hand-over: the lease held it
    raise transitions.StaleMessage()
