"""Handing jobs to the broker: the Celery chain that runs a job, publishing it once its row is
committed, the sweeper that publishes what waits (refused by the broker, or over its owner's
running cap), and revoking a queued job.

Tasks are published by name (`app.signature`), so nothing here imports the tasks that run them.
"""
from __future__ import annotations

import logging
import uuid
from datetime import timedelta
from typing import Any

from celery import chain
from django.conf import settings
from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from core import logs, pause
from core.celery import app
from jobs import sql
from jobs.models import Job
from jobs.registry import job_type_get, job_type_known
from webhooks import dispatch as webhook_dispatch

logger = logging.getLogger(__name__)

RUN_STEP_TASK = "jobs.run_step"
DISPATCH_OWNER_TASK = "jobs.dispatch_owner"
# The chain's tail when the job has a callback (webhooks/tasks.py).
SEND_FOR_SUBJECT_TASK = "webhooks.deliveries_send_for_subject"


def job_signatures(*, job: Job) -> list[Any]:
    """The Celery signatures that run `job` from its next step (the first, or the one handed over
    on its row, `next_step`, which takes `step_input`): that step and the ones after it, then the
    webhook tail if it has a callback.

    The first step's task id is the job's id, so a queued job can be revoked by id. The message
    of the step it starts from carries the job's dispatch (`dispatched_at`), so a message of an
    earlier dispatch never runs the job (jobs.transitions.job_start, jobs.tasks). Each message
    carries its arguments' text for monitors: Celery's saferepr would write the same for these
    short values, at a sixth of a publish's CPU (docs/benchmarks.md, "Fixes")."""
    job_type = job_type_get(job.job_name)
    options = {
        "queue": job_type.queue,
        "soft_time_limit": job_type.soft_time_limit_seconds,
        "time_limit": job_type.time_limit_seconds,
    }
    start = job.next_step or 0
    first: dict[str, Any] = {"job_id": str(job.id), "index": start}
    if job.dispatched_at is not None:
        first["dispatched_at"] = job.dispatched_at.isoformat()
    if start == 0:
        head = app.signature(RUN_STEP_TASK, kwargs=first, immutable=True).set(task_id=str(job.id), argsrepr="()")
    else:
        head = app.signature(RUN_STEP_TASK, args=(job.step_input,), kwargs=first, immutable=True).set(
            argsrepr="(<the previous step's output>,)"
        )
    signatures = [head.set(kwargsrepr=repr(first), **options)]
    signatures += [
        app.signature(RUN_STEP_TASK, kwargs={"job_id": str(job.id), "index": index}).set(**options)
        for index in range(start + 1, len(job_type.steps))
    ]
    if job.callback_url:
        tail = {"subject_id": str(job.id)}
        signatures.append(
            app.signature(SEND_FOR_SUBJECT_TASK, kwargs=tail, immutable=True).set(
                argsrepr="()", kwargsrepr=repr(tail)
            )
        )
    return signatures


def job_publish(*, job: Job, countdown: int | None = None) -> None:
    """Send the job's first message to the broker, to run `countdown` seconds from now if given
    (raises when the broker is unreachable). The message carries the log context of the job's
    own request (core/logs.py), whoever publishes it: published as another job of its owner
    finished (the running cap), or by another request's batch dispatch, it carried theirs, and
    its run's and its webhooks' lines named a request that never asked for it."""
    signatures = job_signatures(job=job)
    with logs.bound(request_id=job.request_id or None, client=str(job.owner_id)):
        if len(signatures) == 1:
            signatures[0].apply_async(countdown=countdown)
        else:
            chain(*signatures).apply_async(countdown=countdown)


def job_publish_or_release(*, job: Job, countdown: int | None = None) -> bool:
    """Publish a claimed job (a queued one, or a running one's next step or retry handed over on
    its row; `countdown`: see job_publish); on any broker failure release the claim for the
    sweeper.

    Tried even while the broker's pause holds (so not core.pause.broker.attempt): a submission
    looks at the pause before it claims its job, a step that ends has no request to hold, and
    the sweeper, to which every other publish leaves its work while paused, tries on each run."""
    try:
        job_publish(job=job, countdown=countdown)
    except Exception:  # the broker's client raises many types; every one means "not published"
        pause.broker.failed()
        if job.next_step is None:
            logger.warning("Could not publish job %s; the sweeper will retry", job.id, exc_info=True)
            Job.objects.filter(pk=job.pk, status=Job.Status.PENDING).update(dispatched_at=None)
        else:
            logger.warning("Could not publish job %s's step %s; the sweeper will retry", job.id, job.next_step,
                           exc_info=True)
            Job.objects.filter(
                pk=job.pk, status__in=Job.RUNNING_STATUSES, next_step=job.next_step, dispatched_at=job.dispatched_at
            ).update(dispatched_at=None)
        return False
    return True


def job_tail_publish_or_release(*, job_id: uuid.UUID, tail: dict[str, Any]) -> None:
    """Send a job's chain tail (`tail`: its signature as the chain carries it), which sends the
    deliveries of the job's final event; if the broker refuses it (or has just refused another
    publish: core.pause), leave them to the webhook dispatcher's next run. Celery sent the tail
    itself, and a refused tail left them marked
    sent until the dispatcher took them back, REDISPATCH_AFTER_SECONDS (10 min) later."""
    if not pause.broker.attempt(lambda: app.signature(tail).apply_async(), logger,
                                "Could not publish job %s's webhooks; the dispatcher will", job_id):
        webhook_dispatch.deliveries_release_for_subject(subject_id=job_id)


# The most waiting jobs one run of the sweeper claims (the rest wait for the next run).
PUBLISH_BATCH = 500


def jobs_publish_waiting(*, owner_id: uuid.UUID | None = None, limit: int = PUBLISH_BATCH) -> int:
    """Publish the jobs waiting for dispatch that are due: scheduled ones whose run_at has come,
    jobs accepted while the broker was down or in a batch, and jobs deferred because their owner
    was at its running cap (JOB_MAX_RUNNING_PER_CLIENT). Each owner's in the order they fell due,
    as many as its cap leaves room for, so a waiting job keeps its place; only `owner_id`'s when
    given (a job of its own just finished, or it submitted a batch). How many were published."""
    now = timezone.now()
    grace = timedelta(seconds=0 if owner_id else settings.JOB_DISPATCH_GRACE_SECONDS)
    with transaction.atomic():
        claimed = sql.jobs_waiting_claim(
            now=now, grace_before=now - grace, cap=settings.JOB_MAX_RUNNING_PER_CLIENT, limit=limit,
            owner_id=owner_id,
        )
    return _claimed_publish(claimed, claims=Job.objects.filter(status=Job.Status.PENDING))


def job_steps_publish_waiting(*, limit: int = PUBLISH_BATCH) -> int:
    """Publish the running jobs' next steps that the broker refused as the step before them
    ended, their retries it refused as a run failed, and the retries that waited out a backoff
    longer than a sweep on the row (jobs.transitions.job_retry_later), once due (jobs.tasks hands
    each over on the job's row first): each from that step, with the input recorded there, as a
    new hand-over, so a refused message, should it have reached the broker after all, does
    nothing. Those whose message was lost are given back here too (job_steps_release_stranded).
    How many were published. Read through the index of the steps waiting, by when they are due
    (job_step_due): retries waiting out an hour's backoff are not read every sweep."""
    now = timezone.now()
    waiting = Job.objects.filter(
        Q(retry_at__isnull=True) | Q(retry_at__lte=now),
        status__in=Job.RUNNING_STATUSES, next_step__isnull=False, dispatched_at__isnull=True,
    )
    with transaction.atomic():
        ids = list(waiting.select_for_update(skip_locked=True).values_list("pk", flat=True)[:limit])
        if ids:
            waiting.filter(pk__in=ids).update(dispatched_at=now)
    claimed = list(Job.objects.filter(pk__in=ids, dispatched_at=now)) if ids else []
    return _claimed_publish(claimed, claims=Job.objects.filter(dispatched_at=now))


def _claimed_publish(claimed: list[Job], *, claims: QuerySet[Job]) -> int:
    """Publish the sweeper's claimed jobs in order; once the broker refuses one (it is still
    down), release the rest too (those of them `claims` still holds) for the next sweep. How
    many were published. Jobs of types this code does not know are put aside first
    (`_unknown_types_put_aside`): their publish raised, taken for the broker refusing, so the
    sweep stopped there, released the jobs after them and paused this process's publishes,
    every sweep, and no client's waiting job due after one was ever published."""
    if unknown := [job for job in claimed if not job_type_known(job.job_name)]:
        _unknown_types_put_aside(unknown, claims=claims)
        claimed = [job for job in claimed if job_type_known(job.job_name)]
    for published, job in enumerate(claimed):
        if not job_publish_or_release(job=job):
            claims.filter(pk__in=[later.pk for later in claimed[published + 1 :]]).update(dispatched_at=None)
            return published
    return len(claimed)


def _unknown_types_put_aside(jobs: list[Job], *, claims: QuerySet[Job]) -> None:
    """Leave unpublished the claimed `jobs`, whose types this code does not know: a deploy removed
    or renamed the type, or added it and this process is older. One that fell due less than the
    broker's visibility timeout (and a minute) ago is released for the next sweep, which a newer
    process may run; an older one, which a rolling deploy cannot explain, keeps its claim, where
    the abandoned-job rule finds it, and fails it (jobs.abandoned)."""
    recent_since = timezone.now() - timedelta(seconds=settings.CELERY_BROKER_VISIBILITY_TIMEOUT_SECONDS + 60)
    recent = [job.pk for job in jobs if (job.run_at or job.created_at) >= recent_since]
    claims.filter(pk__in=recent).update(dispatched_at=None)
    logger.warning("Not publishing %s job(s) of types this code does not know (%s): %s left for a newer process, "
                   "the others for the abandoned-job rule to fail", len(jobs),
                   ", ".join(sorted({job.job_name for job in jobs})), len(recent))


def jobs_release_stranded(*, limit: int = PUBLISH_BATCH) -> int:
    """Give back to the sweeper the jobs handed to the broker longer than
    JOB_DISPATCH_LOST_AFTER_SECONDS ago that have not started: their message is taken for lost
    (a worker gave it up when PostgreSQL stayed down past its retries, or Redis lost its data).
    The sweeper publishes each again, as a new dispatch. If a first message was only waiting in
    a long queue after all, it no longer matches its job's dispatch and does nothing when it
    arrives (jobs.transitions.job_start): the job runs once, from its new place at the back of
    the queue. How many were given back.

    Served by the index of the jobs in the broker (job_in_broker), which holds none of the jobs
    waiting for dispatch: through the unfinished jobs' index it would visit every job pending
    since before the bound, and a client's backlog waiting at its running cap for hours (or its
    jobs scheduled a day ahead) would make that a walk of them, or a Seq Scan of the table,
    every few seconds, to find nothing (docs/reliability.md, "The workers' reads")."""
    lost_before = timezone.now() - timedelta(seconds=settings.JOB_DISPATCH_LOST_AFTER_SECONDS)
    stranded = Job.objects.filter(status=Job.Status.PENDING, dispatched_at__lt=lost_before)
    return _given_back(stranded, limit=limit, what="jobs")


def job_steps_release_stranded(*, limit: int = PUBLISH_BATCH) -> int:
    """Give back to the sweeper the running jobs' next steps (and retries) handed to the broker
    longer than JOB_DISPATCH_LOST_AFTER_SECONDS ago (a retry's: since it was due) that no message
    has started: their message is taken for lost, as a first message is (jobs_release_stranded).
    The worker that handed the step over was killed between the hand-over's commit and its
    publish, or the broker lost the message. The sweeper publishes each again, as a new hand-over
    (job_steps_publish_waiting); the first message, if it was only waiting in a long queue, runs
    nothing when it arrives. A step that starts meanwhile keeps its hand-over: its start and this
    release are each one conditional UPDATE of the row (jobs.hand_overs.job_step_start), so one
    of them finds the other's done, and the step never runs from two messages at once. How many
    were given back. Served by the index of the steps in the broker (job_step_in_broker)."""
    lost_before = timezone.now() - timedelta(seconds=settings.JOB_DISPATCH_LOST_AFTER_SECONDS)
    stranded = Job.objects.filter(
        status__in=Job.RUNNING_STATUSES, next_step__isnull=False, step_started_at__isnull=True,
        dispatched_at__lt=lost_before,
    ).exclude(retry_at__gte=lost_before)
    return _given_back(stranded, limit=limit, what="jobs' next steps")


def _given_back(stranded: QuerySet[Job], *, limit: int, what: str) -> int:
    """Give the first `limit` of `stranded` back to the sweeper (`dispatched_at` cleared), under
    the same conditions again: one that started meanwhile keeps its dispatch. How many."""
    ids = list(stranded.values_list("pk", flat=True)[:limit])
    released = stranded.filter(pk__in=ids).update(dispatched_at=None) if ids else 0
    if released:
        logger.warning("%s %s handed to the broker over %s s ago never started; publishing them again",
                       released, what, settings.JOB_DISPATCH_LOST_AFTER_SECONDS)
    return released


def owner_dispatch_request(*, owner_id: uuid.UUID) -> None:
    """Ask a worker to publish the owner's waiting jobs (a batch just accepted): one message,
    where publishing each job would cost the request one each. If the broker refuses it, the
    sweeper publishes them on its next run, as it does while a publish failed moments ago."""
    pause.broker.attempt(
        lambda: app.send_task(DISPATCH_OWNER_TASK, kwargs={"owner_id": str(owner_id)}),
        logger, "Could not ask for owner %s's dispatch; the sweeper will", owner_id,
    )


def job_revoke_queued(*, job_id: uuid.UUID) -> None:
    """Best effort: tell workers to drop the queued message. The REVOKED row already stops it: a
    worker that takes the message runs nothing of a final job (jobs.tasks.job_run_step). So
    while a publish from this process failed moments ago (core.pause.broker) it is not tried,
    rather than hold the cancel's request for the broker's timeout."""
    # The broker may be down: the row's status makes the revoke redundant.
    pause.broker.attempt(
        lambda: app.control.revoke(str(job_id)), logger, "Could not broadcast revoke for job %s", job_id
    )
