"""A job's life after submission: start, progress, retrying, finish and cancel (failing the jobs
whose worker vanished is jobs/abandoned.py). Each transition records its webhook event in the
same transaction.

PENDING -> STARTED; STARTED <-> RETRY; PENDING/STARTED/RETRY -> SUCCESS, FAILURE or REVOKED.
A final state never changes and the first one written wins: every transition is conditional on
the status it reads (a compare-and-set, or a locked row), so a late or duplicate message does
nothing.
"""
from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from core.errors import Conflict, NotFound
from core.models import Client
from jobs import dispatch, event_log, leases, selectors, sql, telemetry
from jobs.models import Job, JobCounts, JobResult
from jobs.registry import job_type_get, job_types_all
from jobs.shapes import webhook_events_shown
from webhooks import endpoints as webhook_endpoints
from webhooks import outbox
from webhooks import selectors as webhook_selectors

logger = logging.getLogger(__name__)

Status = Job.Status

# At most one job.progress webhook per job per this many seconds; the final event carries the
# last progress anyway.
WEBHOOK_PROGRESS_MIN_INTERVAL_SECONDS = 1.0

FINAL_EVENT_TYPES = {Status.SUCCESS: "job.succeeded", Status.FAILURE: "job.failed", Status.REVOKED: "job.canceled"}


def _locked(job_id: uuid.UUID) -> Job | None:
    return Job.objects.select_for_update().filter(pk=job_id).first()


def _event_record(*, job: Job, event_type: str, by_chain: bool = False) -> None:
    """Log the transition's event (every job's: the streams read it) and hand its webhook event
    to the outbox, in the caller's transaction, so the event exists exactly when the state
    change does. A progress event coalesced out of the log goes to no webhook either.

    `by_chain`: the transition is made by a step of the job's Celery chain, whose tail
    (webhooks.deliveries_send_for_subject) sends the event, so it is not published on commit.
    """
    logged = event_log.job_event_record(job=job, event_type=event_type)
    if logged is None:
        return
    wants_callback = bool(job.callback_url) and event_type in webhook_events_shown(job.webhook_events)
    endpoints = (
        webhook_endpoints.subscribers_cached(owner_id=job.owner_id, event_type=event_type)
        if job.webhook_endpoints else []
    )
    if not wants_callback and not endpoints:
        return
    if event_type == "job.progress":
        last = webhook_selectors.event_latest_at(subject_id=job.id, event_type=event_type)
        if last and timezone.now() - last < timedelta(seconds=WEBHOOK_PROGRESS_MIN_INTERVAL_SECONDS):
            return
    outbox.event_record(
        owner_id=job.owner_id,
        subject_id=job.id,
        event_type=event_type,
        body=logged.body.encode(),  # the logged bytes: rendered once, the same in streams and webhooks
        callback_url=job.callback_url if wants_callback else "",
        endpoints=endpoints,
        # The chain's tail exists only when the job has a callback_url (jobs.dispatch).
        publish=not (by_chain and job.callback_url),
        # A progress event is a snapshot: the latest is what a receiver needs, and kept one a
        # second each carried the whole job (as the job's own log, jobs/event_log.py).
        replaces_earlier=event_type == "job.progress",
    )


class OverRunningCap(Exception):
    """The job's owner already runs JOB_MAX_RUNNING_PER_CLIENT jobs: it waits for dispatch."""


class StaleMessage(Exception):
    """The message belongs to an earlier dispatch of the job: the job was given back to the
    sweeper (jobs.dispatch.jobs_release_stranded) and published again, and that message runs it;
    or to an earlier hand-over of a step, or one whose step another message started
    (jobs.hand_overs.job_step_start)."""


RESULT_QUOTA_EXCEEDED = {
    "type": "result_quota_exceeded",
    "message": "Your persisted results reached their quota before this job started; it would add to them.",
}


def _over_result_quota(job: Job, quota: int) -> bool:
    return bool(quota) and job_type_get(job.job_name).persist_result and JobCounts.objects.filter(
        owner_id=job.owner_id, result_bytes__gte=quota
    ).exists()


def job_start(*, job_id: uuid.UUID, dispatched_at: datetime | None = None) -> Job | None:
    """Mark the job STARTED, taking its first step's lease in that UPDATE (jobs.leases); None when
    it must not run (final already, or gone). Raises OverRunningCap, having put the job back to
    wait for dispatch (keeping its place: its creation time), when its owner already runs as many
    jobs as its cap allows; StepLeased for a copy of its message finding it STARTED, run elsewhere.

    `dispatched_at`: the dispatch the first step's message was published for (None for a message
    that does not say). A message of another dispatch raises StaleMessage and changes nothing,
    whatever the job's status: so a job published again after its first message was thought
    lost runs once, whichever of its two messages arrives first.

    A job of a type that persists its result does not start while its owner's persisted results
    are at or over their quota: it fails (error.type result_quota_exceeded). The quota is checked
    at submission, but the jobs accepted under it all persist when they finish: up to its cap of
    unfinished jobs (JOB_MAX_UNFINISHED_PER_CLIENT, or its own) results past it, not only the running jobs'."""
    # Always in a transaction: every start logs its job.started event (jobs.event_log).
    now = timezone.now()
    cap, quota = settings.JOB_MAX_RUNNING_PER_CLIENT, settings.JOB_RESULT_QUOTA_BYTES_PER_CLIENT
    condition, params = f"{sql.STARTABLE} AND {sql.under_running_cap()}", [cap, cap]
    if quota:
        persisting = [job_type.name for job_type in job_types_all() if job_type.persist_result]
        condition, params = f"{condition} AND {sql.under_result_quota(persisting)}", [*params, *persisting, quota]
    if dispatched_at is not None:
        same_dispatch, dispatch_params = sql.in_dispatch(dispatched_at)
        condition, params = f"{condition} AND {same_dispatch}", [*params, *dispatch_params]
    with transaction.atomic():
        # The job's row is locked before its owner's count row (which the running cap's check
        # reads locked), the order of every other writer: a cancel, a finish, the deadline's
        # cancel lock the job, then their triggers the counts. Taken the other way round, a
        # start waiting for a job its client was canceling deadlocked with the cancel.
        job = _locked(job_id)
        if job is None or job.is_final:
            return None
        started = sql.job_update_if(job_id, condition=condition, params=params, status=Status.STARTED, started_at=now,
                                    step_heartbeat_at=leases.database_now())
        if started is not None:
            _event_record(job=started, event_type="job.started")
            telemetry.job_started(job=started)
            return started
        if dispatched_at is not None and job.dispatched_at != dispatched_at:
            raise StaleMessage()  # nothing was written
        if job.cancel_requested:
            _write_final(job, Status.REVOKED, by_chain=True)  # only a chain's first step starts jobs
            return None
        if job.status == Status.PENDING and _over_result_quota(job, quota):
            job.error = RESULT_QUOTA_EXCEEDED
            job.save(update_fields=["error"])
            _write_final(job, Status.FAILURE, by_chain=True)
            return None
        over_cap = job.status == Status.PENDING
        if over_cap:
            job.dispatched_at = None  # the sweeper publishes it again once there is room
            job.save(update_fields=["dispatched_at"])
    if over_cap:
        raise OverRunningCap()  # out of the atomic block, which would roll the release back
    if job.next_step is None:  # else the hand-over's start (jobs.hand_overs.job_step_start) takes it
        leases.step_lease_take(job_id=job_id)  # STARTED already: its message delivered again
    return job


def job_progress(*, job_id: uuid.UUID, current: int, total: int, message: str = "") -> None:
    with transaction.atomic():
        job = _locked(job_id)
        if job is None or job.status not in Job.RUNNING_STATUSES:
            return
        job.progress = {"current": current, "total": total, "message": message}
        job.save(update_fields=["progress"])
        _event_record(job=job, event_type="job.progress")


def job_set_retrying(*, job_id: uuid.UUID, retrying: bool) -> None:
    source, target = (Status.STARTED, Status.RETRY) if retrying else (Status.RETRY, Status.STARTED)
    if Job.objects.filter(pk=job_id, status=source).update(status=target):
        telemetry.job_retry_marked(job_id=job_id, retrying=retrying)


def job_cancel_requested(*, job_id: uuid.UUID) -> bool:
    """True when the job was canceled, or its row is gone (pruned): either way, stop."""
    return not Job.objects.filter(pk=job_id, cancel_requested=False).exists()


def _write_final(job: Job, status: str, *, by_chain: bool = False) -> None:
    """Write a final state on a locked, not-yet-final row, then what follows it."""
    job.status = status
    job.finished_at = timezone.now()
    job.save(update_fields=["status", "finished_at"])
    _after_final(job, by_chain=by_chain)


def _after_final(job: Job, *, by_chain: bool) -> None:
    """What follows a final state, in its transaction: the persisted result and the event."""
    telemetry.job_finished(job=job)
    if job.status == Status.SUCCESS and job_type_get(job.job_name).persist_result:
        JobResult.objects.create(owner_id=job.owner_id, job=job, task_name=job.job_name, result=job.result)
    _event_record(job=job, event_type=FINAL_EVENT_TYPES[job.status], by_chain=by_chain)


def job_finish(
    *,
    job_id: uuid.UUID,
    status: str,
    result: Any = None,
    error: dict[str, str] | None = None,
    by_chain: bool = False,
    publish_waiting: bool = True,
) -> bool:
    """Write a final state unless the job already has one (the first final state wins); whether
    it was written. `by_chain`: called by a step of the job's chain (see `_event_record`).
    `publish_waiting` False: the caller publishes the owner's waiting jobs itself, once for many
    jobs finished (jobs.unknown_types)."""
    # A handed-over step's input (up to a step's whole output): no step takes it any more.
    fields: dict[str, Any] = {"step_input": None}
    if status == Status.SUCCESS:
        fields["result"] = result
        fields["error"] = None  # an earlier run's, or a deadline that came too late to stop it
    if error is not None:
        fields["error"] = error
    with transaction.atomic():
        # The UPDATE locks the row until commit, so the result and event go with the state.
        finished, owner_has_more = sql.job_finish_if_not_final(
            job_id, status=status, finished_at=timezone.now(), **fields
        )
        if finished is None:
            return False
        _after_final(finished, by_chain=by_chain)
    if owner_has_more and publish_waiting and settings.JOB_MAX_RUNNING_PER_CLIENT:
        # A place under the owner's running cap is free: its next waiting job need not wait
        # for the sweeper.
        dispatch.jobs_publish_waiting(owner_id=finished.owner_id)
    return True


def _waiting_to_retry(job: Job) -> bool:
    """Whether the job is between two runs, waiting out its retry backoff (job_retry_later):
    no worker runs it, its next run waits on its row (or, within a sweep, its message in the
    broker) until `retry_at`. (A job also shows RETRY while a running step waits to retry a
    call, `StepContext.retrying`; its run began after its retry_at.)"""
    return job.status == Status.RETRY and job.retry_at is not None and job.retry_at > timezone.now()


def _between_steps(job: Job) -> bool:
    """Whether the running job's next step (or retry) is handed over and no message has started
    it (jobs.hand_overs): no step of it runs, and its message may wait long, in a queue behind
    other jobs, or for the sweeper while the broker is down (6 h if it was lost). Written final
    now, that message's start finds the job final and runs nothing (its conditional UPDATE waits
    for this row's lock)."""
    return job.next_step is not None and job.step_started_at is None


def _cancel_locked(job: Job, *, error: dict[str, str] | None = None, revoke_message: bool = True) -> None:
    """Cancel a locked, unfinished job: at once if it is still queued (or scheduled), waits
    out a retry backoff (up to an hour), or is between two steps: nothing would look at its flag
    before its next run. Cooperatively (within a step) if a step runs. `error` says why, when it
    is not the client. A job between steps was canceled cooperatively: it stayed STARTED, its
    place under its owner's running cap taken, until its next step's message came.
    `revoke_message` False: no revoke is broadcast for its queued message (the row stops it)."""
    job.cancel_requested = True
    job.error = error or job.error
    job.save(update_fields=["cancel_requested", "error"])
    if job.status == Status.PENDING or _waiting_to_retry(job) or _between_steps(job):
        _write_final(job, Status.REVOKED)
        if revoke_message:
            transaction.on_commit(lambda: dispatch.job_revoke_queued(job_id=job.id))
    else:
        telemetry.job_cancel_requested(job=job)


def job_cancel(*, owner: Client, job_id: uuid.UUID) -> Job:
    """The client's cancel (see _cancel_locked); 409 when the job is already final."""
    with transaction.atomic():
        job = Job.objects.select_for_update().filter(pk=job_id, owner=owner).first()
        if job is None:
            raise NotFound(selectors.NO_JOB)
        if job.is_final:
            raise Conflict(f"The job is already {job.status}.", code="job_already_final")
        _cancel_locked(job)
    return job


def owner_jobs_cancel(*, owner_id: uuid.UUID, batch_rows: int = 500) -> int:
    """Cancel the owner's unfinished jobs as its client's cancel would, `batch_rows` a transaction
    (at most JOB_MAX_UNFINISHED_PER_CLIENT, 10,000, of them); how many. No revoke is broadcast
    for each queued message, 10,000 of them: a worker that takes one runs nothing of a final job.
    A job a transition holds is skipped, not waited for (its client's deletion went past it,
    which may be held long): the deletion's stop made again (core.services) cancels it, or
    deleting its row stops it (a running step finds its row gone as it finds a cancel).
    Each job's callback_url is cleared under its lock first: a job submitted after the deletion's
    clear of them (with a key other processes still took) sent its job.canceled event there."""
    canceled = 0
    unfinished = Job.objects.filter(owner_id=owner_id, status__in=Job.ACTIVE_STATUSES, cancel_requested=False)
    while True:
        with transaction.atomic():
            jobs = list(unfinished.select_for_update(skip_locked=True).order_by("pk")[:batch_rows])
            Job.objects.filter(pk__in=[job.pk for job in jobs]).exclude(callback_url="").update(callback_url="")
            for job in jobs:
                job.callback_url = ""
                _cancel_locked(job, revoke_message=False)
        if not jobs:
            return canceled
        canceled += len(jobs)


DEADLINE_EXCEEDED = {"type": "deadline_exceeded", "message": "The job's deadline passed before it finished."}


def job_cancel_past_deadline(*, job_id: uuid.UUID) -> int:
    """Cancel a job whose deadline has passed (jobs.deadlines), as a client's cancel would, with
    error.type deadline_exceeded (its job.canceled webhook carries it); 1 if it did, else 0."""
    with transaction.atomic():
        job = _locked(job_id)
        if job is None or job.is_final or job.cancel_requested:
            return 0
        _cancel_locked(job, error=DEADLINE_EXCEEDED)
        return 1


def job_retry_later(*, job_id: uuid.UUID, error: dict[str, str], step: int, step_input: Any) -> Job | None:
    """After a failed run of the job's step `step` (which took `step_input`): if the job's retry
    policy allows another run, and it would start before the job's deadline, mark it RETRY (its
    next attempt, the last error, when it is due: `retry_at`) and hand that step over again on
    its row as jobs.tasks hands a next step over (`next_step`, `step_input`), so a retry is never
    lost; the job as written. Else None. A retry due within one sweep is handed to the broker now
    (`dispatched_at`, which its countdown message carries; refused, it waits for the sweeper); a
    later one waits on the row (`dispatched_at` NULL) for the sweeper, which publishes it once due
    (jobs.dispatch.job_steps_publish_waiting). (A run due past the deadline never happens: the job
    would wait for nothing, then end canceled, the run's error replaced by the deadline's.) A job
    whose cancel was requested (by its client, or its deadline) as the run failed is canceled: the
    run it would have had is what the cancel stops (it ended failed, with the run's error)."""
    with transaction.atomic():
        job = _locked(job_id)
        if job is None or job.status not in Job.RUNNING_STATUSES or job.attempt >= job.max_attempts:
            return None
        if not job.cancel_requested:
            now = timezone.now()
            retry_at = now + timedelta(seconds=job.retry_backoff_seconds)
            if job.deadline is not None and retry_at >= job.deadline:
                return None
            job.status, job.attempt, job.error, job.retry_at = Status.RETRY, job.attempt + 1, error, retry_at
            job.next_step, job.step_input, job.step_started_at, job.step_heartbeat_at = step, step_input, None, None
            # Up to a sweep late, rather than an ETA message: a worker takes that at once and holds
            # it unacked until its time, past its prefetch, and killed meanwhile, the retry waited
            # the broker's visibility timeout (2 h with Redis), not its backoff.
            by_countdown = job.retry_backoff_seconds <= settings.JOB_DISPATCH_SWEEP_SECONDS
            job.dispatched_at = now if by_countdown else None
            job.save(update_fields=["status", "attempt", "error", "retry_at", "next_step", "step_input",
                                    "dispatched_at", "step_started_at", "step_heartbeat_at"])
            telemetry.job_retrying(job=job, backoff_seconds=job.retry_backoff_seconds)
            return job
    # As a step that finds its cancel ends it (and its owner's next job may start at once).
    job_finish(job_id=job_id, status=Status.REVOKED, by_chain=True)
    return None
