"""Celery tasks that run jobs (`jobs.run_step`, one per step, chained: jobs/dispatch.py) and the
jobs app's periodic tasks.

Tasks take ids, never model instances. A step never raises out of the task for a job failure:
the failure is written on the Job row (the source of truth) and the step sends the chain's tail
(the webhook delivery) as the job's last step would. The messages after a step are sent by the
step, not by Celery, so that a broker down at that moment loses none of them: the next step (or
a failed step's retry) is handed over on the job's row for the sweeper, the tail's deliveries
left to the dispatcher.
"""
from __future__ import annotations

import logging
import time
import uuid
from datetime import datetime
from typing import Any

from celery import shared_task
from celery.exceptions import Ignore, Reject, SoftTimeLimitExceeded
from django.db import DatabaseError, DataError
from django.utils import timezone

from core.housekeeping import (
    batches_lease_seconds,
    look_again_after_a_dead_run,
    rows_lease_seconds,
    run_alone,
)
from core.log_database_errors import first_line
from core.parsers import storable_text
from core.rows_apart import MOST_ROWS_READ
from jobs import (
    abandoned,
    deadlines,
    dispatch,
    hand_overs,
    leases,
    model_budget,
    retention,
    transitions,
)
from jobs.models import Job
from jobs.registry import job_type_get, job_types_all
from jobs.types.base import JobCanceled, JobFailed, StepContext

logger = logging.getLogger(__name__)

Status = Job.Status


def _context(job: Job, index: int, step_count: int) -> StepContext:
    return StepContext(
        job_id=job.id,
        owner_id=job.owner_id,
        payload=job.payload,
        step_index=index,
        step_count=step_count,
        report_progress=lambda current, total, message: transitions.job_progress(
            job_id=job.id, current=current, total=total, message=message
        ),
        cancel_requested=lambda: transitions.job_cancel_requested(job_id=job.id),
        mark_retrying=lambda retrying: transitions.job_set_retrying(job_id=job.id, retrying=retrying),
        require_model_budget=lambda: model_budget.model_budget_require_for_call(owner_id=job.owner_id),
        record_model_usage=lambda tokens: model_budget.model_usage_record(owner_id=job.owner_id, tokens=tokens),
    )


# Celery's retries of a step whose database was unreachable: about ten minutes, backing off to 30 s.
_MAX_TASK_RETRIES = 25
# A copy waiting for a lease whose look again the broker refused is requeued after this pause.
_REQUEUE_PAUSE_SECONDS = 1.0
# The header of a step's message that counts the looks it made for another run's lease.
_LEASE_LOOKS_HEADER = "lease_looks"


def _fail(task: Any, job: Job, index: int, step_input: Any, error_type: str, message: str, *,
          retryable: bool = True) -> None:
    """Step `index` of the job (which took `step_input`) failed: run it again later if it may do
    better (`retryable`) and the job's retry policy allows, handed over on the job's row as a
    next step is (`_hand_over`), so the rest of the chain follows it: published now to run once
    the backoff has passed, or, for a backoff longer than a sweep, left on the row for the
    sweeper to publish once due (jobs.transitions.job_retry_later); else write FAILURE. Celery's
    own retry (`task.retry`) dropped the message for good when the broker refused the new one:
    the job stayed RETRY until the abandoned-job rule failed it. The message may quote what the
    job read (an exception's text, a model provider's error): a U+0000 or lone surrogate in it
    made the write fail, and the step, taken for one the database failed, ran again, up to 26
    times, then was left to the abandoned-job rule."""
    error = {"type": error_type, "message": storable_text(message)}
    retrying = transitions.job_retry_later(
        job_id=job.id, error=error, step=index, step_input=step_input
    ) if retryable else None
    if retrying is None:
        transitions.job_finish(job_id=job.id, status=Status.FAILURE, error=error, by_chain=True)
        return
    task.request.chain = None  # sent with the retry, not by Celery
    if retrying.dispatched_at is not None:
        dispatch.job_publish_or_release(job=retrying, countdown=retrying.retry_backoff_seconds)


@shared_task(
    name=dispatch.RUN_STEP_TASK,
    bind=True,
    ignore_result=True,
    # PostgreSQL unreachable (a restart, a failover) is not the job's failure: run the step again
    # once it is back, backing off to 30 s, for about ten minutes. After that the message is acked
    # as failed: a started job is then failed by the abandoned-job rule, and one that never
    # started is published again by the sweeper (jobs.dispatch.jobs_release_stranded). A worker
    # that can start no thread for the step's lease is not the job's failure either.
    autoretry_for=(DatabaseError, leases.HeartbeatUnstarted),
    retry_backoff=2,
    retry_backoff_max=30,
    retry_jitter=False,
    max_retries=_MAX_TASK_RETRIES,
)
def job_run_step(
    self: Any, previous: Any = None, *, job_id: str, index: int, dispatched_at: str | None = None
) -> None:
    _step_run(self, previous, job_id=job_id, index=index, dispatched_at=dispatched_at)
    _tail_send(self, job_id)


def _step_run(task: Any, previous: Any, *, job_id: str, index: int, dispatched_at: str | None) -> None:
    """Run step `index` of the job, unless the job's row says not to; hands the next step over."""
    job_uuid = uuid.UUID(job_id)
    dispatch_time = None if dispatched_at is None else datetime.fromisoformat(dispatched_at)
    redelivered = bool((task.request.delivery_info or {}).get("redelivered"))
    if redelivered:
        # The broker handed the message out again: the step's last run was cut off (its pool
        # process or worker killed, its host gone). Celery's own line for that, in the worker's
        # main process, names no job ("WorkerLostError"); this one carries the job's id.
        logger.warning("Job %s step %s runs again: its message was redelivered after its last run was cut off",
                       job_id, index)
    try:
        job = _step_start(task, job_uuid, index, dispatch_time, redelivered)
    except leases.StepLeased as held:
        # Another copy of this message runs the step (its worker lost the broker's connection, so
        # the broker handed this one out again): look again once its heartbeat could be stale, the
        # same message (its kwargs, its chain). As many times as that run lasts: its hard time
        # limit ends it. Its first look is a WARNING, the later ones (its message's header counts
        # them) INFO: a WARNING every lease while the live run lasted said nothing new.
        looks = getattr(task.request, _LEASE_LOOKS_HEADER, None) or 0
        logger.log(logging.INFO if looks else logging.WARNING,
                   "Job %s step %s: another run of it is alive (its heartbeat is fresh), looked at again in %.0f s",
                   job_id, index, held.wait_seconds)
        headers = {**(task.request.headers or {}), _LEASE_LOOKS_HEADER: looks + 1}
        # Each look counts toward the task's retries (those a failing database has left too).
        # Celery keeps max_retries on the task object, shared by the pool process's later runs:
        # the next one's retries on a database error stopped after that many, not 25.
        try:
            raise task.retry(countdown=held.wait_seconds, max_retries=task.request.retries + 1, headers=headers) from None
        except Reject as refused:
            # The broker refused the look again (its publish): Celery rejects the message without
            # requeueing it, and where this copy was the step's only message (its first run died)
            # the job sat STARTED until the abandoned-job rule. Handed back to the broker instead,
            # after a pause that keeps a copy from looking again as fast as it is redelivered.
            time.sleep(min(held.wait_seconds, _REQUEUE_PAUSE_SECONDS))
            raise Reject(refused.reason, requeue=True) from None
        finally:
            task.__dict__.pop("override_max_retries", None)
    if job is None or job.is_final:
        return  # canceled, already finished (a duplicate message), or pruned
    if job.status == Status.RETRY:
        transitions.job_set_retrying(job_id=job_uuid, retrying=False)  # its next run starts
    job_type = job_type_get(job.job_name)
    try:
        with leases.step_lease_kept(job_id=job_uuid):
            output = job_type.steps[index](_context(job, index, len(job_type.steps)), previous)
    except JobCanceled:
        transitions.job_finish(job_id=job_uuid, status=Status.REVOKED, by_chain=True)
        return
    except JobFailed as exc:
        _fail(task, job, index, previous, exc.error_type, exc.message, retryable=exc.retryable)
        return
    except SoftTimeLimitExceeded:
        _fail(task, job, index, previous, "time_limit_exceeded", f"Step {index + 1} ran out of time.")
        return
    except (DatabaseError, leases.HeartbeatUnstarted):
        raise  # the database (the progress/cancel calls) or the worker failed, not the job (retried)
    except Exception as exc:  # job code is arbitrary: any exception is the job's failure
        logger.warning("Job %s step %s raised", job_id, index, exc_info=True)
        _fail(task, job, index, previous, type(exc).__name__, str(exc)[:2000] or type(exc).__name__)
        return
    try:
        if index == len(job_type.steps) - 1:
            transitions.job_finish(job_id=job_uuid, status=Status.SUCCESS, result=output, by_chain=True)
            return
        _hand_over(task, job, index + 1, output)
    except DataError as exc:
        # PostgreSQL refused the output itself (a U+0000, a lone surrogate, a NaN): not the
        # database failing, which the task's retries are for. Retried as that, the step ran again,
        # and with it whatever it paid for (a model call), up to 26 times. Its first line only:
        # the rest of PostgreSQL's error quotes the output up to what it refused ("CONTEXT:  JSON
        # data, line 1: ..."), a client's data, which a traceback wrote into the log.
        logger.warning("Job %s step %s: its output cannot be stored (%s)", job_id, index, first_line(exc))
        _fail(task, job, index, previous, "unstorable_output",
              f"Step {index + 1}'s output cannot be stored (PostgreSQL refused it).")


def _step_start(task: Any, job_uuid: uuid.UUID, index: int, dispatch_time: datetime | None,
                redelivered: bool) -> Job | None:
    """Start step `index` on the job's row, taking its lease (jobs.leases): in the start's own
    UPDATE for its first run, the normal path's only write; the job, or None when it must not run."""
    job = None
    if index == 0:
        try:
            job = transitions.job_start(job_id=job_uuid, dispatched_at=dispatch_time)
        except (transitions.OverRunningCap, transitions.StaleMessage):
            # Acked, and the rest of the chain is not sent: the job waits on its row (over its
            # owner's cap), or the message of its current dispatch runs it (a stale message).
            raise Ignore() from None
    if index > 0 or (job is not None and job.next_step is not None):  # a step handed over (a retry, too)
        try:
            # A retry of this task (autoretry_for: the database failed its run) is a new message,
            # not one the broker redelivered, but its earlier run ended as a cut-off one does:
            # taken for a second copy, it ran nothing, and the job sat STARTED until the
            # abandoned-job rule failed it worker_lost.
            job = hand_overs.job_step_start(job_id=job_uuid, step=index, dispatched_at=dispatch_time,
                                            redelivered=redelivered or bool(task.request.retries))
        except transitions.StaleMessage:
            # Acked, and the rest of the chain is not sent: a later hand-over's message runs it,
            # or this hand-over's other message runs it already.
            logger.warning("Job %s step %s: a message of an earlier hand-over, or of a step started already, not run",
                           job_uuid, index)
            raise Ignore() from None
    return job


def _tail_send(task: Any, job_id: str) -> None:
    """Send the chain's tail, the job's webhooks, after a step that left the job final (or found
    it so; a step that handed the next one over took the chain already). The chain's other
    steps would do nothing for a final job, so only the tail is sent; if the broker refuses
    it, the deliveries it would send are left to the webhook dispatcher (jobs.dispatch)."""
    rest = task.request.chain
    task.request.chain = None
    # Celery keeps a chain's rest last task first: the tail, when the job has a callback.
    if rest and rest[0]["task"] == dispatch.SEND_FOR_SUBJECT_TASK:
        dispatch.job_tail_publish_or_release(job_id=uuid.UUID(job_id), tail=rest[0])


def _hand_over(task: Any, job: Job, step: int, output: Any) -> None:
    """Send the job's step `step`, which takes `output`, the outbox's way, as its first step is
    sent: recorded on the job's row first, then published; if the broker refuses it, the row is
    released for the sweeper (jobs.dispatch.job_steps_publish_waiting), which publishes it from
    there. Celery would send the chain's next message itself, after the task, and a broker down
    at that moment lost it for good: the job stayed STARTED until the abandoned-job rule failed
    it (docs/reliability.md, "The broker is down")."""
    task.request.chain = None  # sent here, with the rest of the chain, not by Celery
    now = timezone.now()
    if not hand_overs.job_step_hand_over(job_id=job.id, step=step, step_input=output, dispatched_at=now):
        return  # final (or canceled) meanwhile, or this step's earlier run handed the next one over already
    job.next_step, job.step_input, job.dispatched_at = step, output, now
    dispatch.job_publish_or_release(job=job)


@shared_task(name="jobs.dispatch_sweep", ignore_result=True)
def jobs_dispatch_sweep() -> int:
    """Periodic: publish the jobs waiting for dispatch (the broker was down, or their owner was
    at its running cap), having first given back those whose message was lost, and the running
    jobs' next steps the broker refused (or whose message was lost)."""
    dispatch.jobs_release_stranded()
    dispatch.job_steps_release_stranded()
    return dispatch.jobs_publish_waiting() + dispatch.job_steps_publish_waiting()


@shared_task(name=dispatch.DISPATCH_OWNER_TASK, ignore_result=True, autoretry_for=(DatabaseError,), max_retries=5)
def jobs_dispatch_owner(*, owner_id: str) -> int:
    """Publish one owner's waiting jobs (a batch it just submitted), as many as its cap lets run."""
    published = 0
    while True:
        count = dispatch.jobs_publish_waiting(owner_id=uuid.UUID(owner_id))
        published += count
        if count < dispatch.PUBLISH_BATCH:
            return published


# The periodic rules run one at a time, as the prunes do (core/housekeeping.py). Beat sends each
# every 5 s, and a run slowed by rows whose act raises (10-20 ms each, 500 a look) lasts longer:
# a run sent meanwhile read the same rows and acted on them beside it, finding most done, on a
# second thread of the deliveries worker (whose threads have no time limit), one more every 5 s
# while the runs stayed slow. A run that finds the slot held does nothing: beat's next, 5 s on,
# tries again, so a run whose worker was killed keeps the rule out for its lease only. The slot's
# bound: the rows a run reads at most (MOST_ROWS_READ a look).


@shared_task(name="jobs.enforce_deadlines", ignore_result=True)
def jobs_enforce_deadlines() -> int:
    """Periodic: cancel the jobs whose deadline has passed (error.type deadline_exceeded). One
    look: 500 rows, a lease of 20 s."""
    with run_alone("jobs.enforce_deadlines", lease=rows_lease_seconds(MOST_ROWS_READ)) as alone:
        return deadlines.jobs_cancel_past_deadline() if alone else 0


@shared_task(name="jobs.fail_abandoned", ignore_result=True)
def jobs_fail_abandoned() -> int:
    """Periodic: fail the jobs whose worker vanished for good (error.type worker_lost). A look per
    job type and two for the unknown types' jobs, 500 rows each: a lease of (job types + 2) x
    20 s, 2 minutes with the four built-in types."""
    looks = len(job_types_all()) + 2
    with run_alone("jobs.fail_abandoned", lease=rows_lease_seconds(looks * MOST_ROWS_READ)) as alone:
        return abandoned.jobs_fail_abandoned() if alone else 0


@shared_task(name="jobs.prune", bind=True, ignore_result=True)
def jobs_prune(self: Any) -> dict[str, int]:
    """Periodic: delete finished jobs, persisted results and idempotency keys past retention. A
    run that stopped at its cap queues the next at once, behind what the maintenance queue holds:
    beat's hourly run alone deleted at most 100,000 rows of a kind an hour, so a service that
    finished more jobs than that (28 a second) kept them for good, its tables growing without end.
    One run at a time: a run sent while another is under way (beat's, an hour after a chain began,
    or a second beat's) does nothing and queues nothing, where it began a chain of its own, one
    more each hour, each holding a thread of the deliveries worker until the backlog was gone.
    The next is queued once this one's slot is let go, so that it finds none (core/housekeeping.py:
    with Redis down, both run, as before). The slot's bound: its four kinds' batches. A
    redelivered run that finds the slot held (its own, its worker killed) looks again once the
    lease has run out, rather than cut the chain until beat's next run."""
    lease = batches_lease_seconds(4 * retention.PRUNE_MAX_BATCHES)
    with run_alone("jobs.prune", lease=lease) as alone:
        counts = retention.jobs_retention_apply() if alone else {}
    if not alone:
        look_again_after_a_dead_run(self, lease=lease)
    elif retention.retention_more_left(counts):
        self.apply_async()
    return counts
