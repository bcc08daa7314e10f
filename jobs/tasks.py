"""Celery tasks that run jobs: one `jobs.run_step` task per step, chained; and the sweeper.

Tasks take ids, never model instances. A step never raises out of the task for a job failure:
the failure is written on the Job row (the source of truth) and the rest of the chain sees a
final job and does nothing, so the chain's tail (the webhook delivery) still runs. The tail
sends the final event that the last step recorded; events recorded mid-job (started, progress)
and outside the chain (a cancel of a queued job, the sweeper) publish their own delivery.
"""
from __future__ import annotations

import logging
import uuid
from typing import Any

from celery import chain, shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.db import DatabaseError

from jobs.models import Job
from jobs.registry import job_type_get

logger = logging.getLogger(__name__)

JOBS_QUEUE = "jobs"


def job_signatures(*, job: Job) -> list[Any]:
    """The Celery signatures that run `job`: its steps, then the webhook tail if it has a callback."""
    job_type = job_type_get(job.job_name)
    options = {
        "queue": JOBS_QUEUE,
        "soft_time_limit": job_type.soft_time_limit_seconds,
        "time_limit": job_type.time_limit_seconds,
    }
    first = {"job_id": str(job.id), "index": 0}
    signatures = [
        # The first step has the job's id as its task id, so a queued job can be revoked by id.
        # Its arguments' text for monitors is given: Celery's saferepr would write the same for
        # these short values, at a sixth of a publish's CPU (docs/benchmarks.md).
        job_run_step.si(**first).set(
            task_id=str(job.id), argsrepr="()", kwargsrepr=repr(first), **options
        )
    ]
    signatures += [
        job_run_step.s(job_id=str(job.id), index=index).set(**options)
        for index in range(1, len(job_type.steps))
    ]
    if job.callback_url:
        from webhooks.tasks import deliveries_send_for_subject

        tail = {"subject_id": str(job.id)}
        # Published by the last step's worker: the same given text saves it there.
        signatures.append(
            deliveries_send_for_subject.si(**tail).set(argsrepr="()", kwargsrepr=repr(tail))
        )
    return signatures


def job_publish(*, job: Job) -> None:
    """Send the job's first message to the broker (raises when the broker is unreachable)."""
    signatures = job_signatures(job=job)
    if len(signatures) == 1:
        signatures[0].apply_async()
    else:
        chain(*signatures).apply_async()


def job_revoke_queued(*, job_id: uuid.UUID) -> None:
    """Best effort: tell workers to drop the queued message. The REVOKED row already stops it."""
    from core.celery import app

    try:
        app.control.revoke(str(job_id))
    except Exception:  # the broker may be down; the row's status makes the revoke redundant
        logger.warning("Could not broadcast revoke for job %s", job_id, exc_info=True)


@shared_task(
    name="jobs.run_step",
    bind=True,
    ignore_result=True,
    # PostgreSQL unreachable (a restart, a failover) is not the job's failure: run the step again
    # once it is back, backing off to 30 s, for about ten minutes. Without this the message was
    # acked as failed and the job sat STARTED (or PENDING, if it never started) for good.
    autoretry_for=(DatabaseError,),
    retry_backoff=2,
    retry_backoff_max=30,
    retry_jitter=False,
    max_retries=25,
)
def job_run_step(self: Any, previous: Any = None, *, job_id: str, index: int) -> Any:
    from jobs import services
    from jobs.runtime import JobCancelled, JobFailed, StepContext

    job_uuid = uuid.UUID(job_id)
    if index == 0:
        job = services.job_start(job_id=job_uuid)
    else:
        job = Job.objects.filter(pk=job_uuid).first()
        if job is not None and job.cancel_requested and not job.is_final:
            services.job_finish(job_id=job_uuid, status=Job.Status.REVOKED, by_chain=True)
            return None
    if job is None or job.is_final:
        return None  # cancelled, already finished (a duplicate message), or pruned
    job_type = job_type_get(job.job_name)
    context = StepContext(
        job_id=job_uuid, payload=job.payload, step_index=index, step_count=len(job_type.steps)
    )
    try:
        output = job_type.steps[index](context, previous)
    except JobCancelled:
        services.job_finish(job_id=job_uuid, status=Job.Status.REVOKED, by_chain=True)
        return None
    except JobFailed as exc:
        _fail(job_uuid, exc.error_type, exc.message)
        return None
    except SoftTimeLimitExceeded:
        _fail(job_uuid, "time_limit_exceeded", f"Step {index + 1} ran out of time.")
        return None
    except DatabaseError:
        raise  # from the progress/cancel calls: the database, not the job, failed (retried)
    except Exception as exc:  # job code is arbitrary: any exception is the job's failure
        logger.warning("Job %s step %s raised", job_id, index, exc_info=True)
        _fail(job_uuid, type(exc).__name__, str(exc)[:2000] or type(exc).__name__)
        return None
    if index == len(job_type.steps) - 1:
        services.job_finish(
            job_id=job_uuid, status=Job.Status.SUCCESS, result=output, by_chain=True
        )
        return None
    return output


def _fail(job_id: uuid.UUID, error_type: str, message: str) -> None:
    from jobs import services

    services.job_finish(
        job_id=job_id,
        status=Job.Status.FAILURE,
        error={"type": error_type, "message": message},
        by_chain=True,
    )


@shared_task(name="jobs.dispatch_sweep", ignore_result=True)
def jobs_dispatch_sweep() -> int:
    """Periodic: publish jobs accepted while the broker was down; fail jobs whose worker vanished."""
    from jobs import services

    services.jobs_fail_abandoned()
    return services.jobs_dispatch_undispatched()



@shared_task(name="jobs.prune", ignore_result=True)
def jobs_prune() -> dict[str, int]:
    """Periodic: delete finished jobs, webhook logs and results past their retention."""
    from jobs import services

    return services.housekeeping_run()
