"""What a job's life tells its operators: at each transition one log line (INFO, with the job's
context) and the metrics it moves (core/metrics.py); a refusal for a spent model budget, counted.
Called by submission, the transitions and the model budget, one call each, never deciding anything.

A final state is counted once its transaction commits: a transition rolled back never happened.
"""
from __future__ import annotations

import uuid
from collections.abc import Sequence

from django.db import transaction
from django.utils import timezone

from core import logs, metrics
from jobs.models import Job
from jobs.shapes import error_type

log = logs.get_logger("jobs.transitions")

# Where a client's spent daily model budget refuses a job (jobs/model_budget.py).
MODEL_BUDGET_CHECKS = ("submit", "run")


def _about(job: Job) -> dict[str, object]:
    """A line's fields naming the job: its id, client and type, and the id of the request that
    submitted it where it has one, whoever writes the line (a rule of the beat's canceling it at
    its deadline or failing it as abandoned, another request canceling it): a grep of that
    request finds how the job ended. A writer's own other request id stays on the line as
    `by_request_id` (a grep of the cancel's request finds its line too). One it has not leaves
    the line the context of its writer."""
    about: dict[str, object] = {"job_id": job.id, "client": job.owner_id, "job_name": job.job_name}
    if job.request_id:
        about["request_id"] = job.request_id
        writer = logs.context().get("request_id")
        if writer and writer != job.request_id:
            about["by_request_id"] = writer
    return about


def jobs_submitted(*, jobs: Sequence[Job]) -> None:
    """Accepted (inserted); a single job's id joins the request's log context."""
    for job in jobs:
        metrics.job_submitted(job_name=job.job_name)
        log.info("job submitted", job_id=job.id, client=job.owner_id, job_name=job.job_name,
                 scheduled_for=job.run_at)
    if len(jobs) == 1:
        logs.bind(job_id=str(jobs[0].id))


def model_budget_refused(*, where: str) -> None:
    """A spent daily model budget refused a submission (429; a batch counts once) or a running
    job's model call (the job fails). Counted only: the request's line, or the job's, names the
    client."""
    metrics.model_budget_refused(where=where)


def job_started(*, job: Job) -> None:
    """PENDING -> STARTED (or RETRY -> STARTED for a retry's next run)."""
    due = job.run_at or job.created_at
    waited = (job.started_at - due).total_seconds() if job.started_at else 0.0
    metrics.job_started(job_name=job.job_name, waited_seconds=waited)
    log.info("job started", **_about(job), attempt=job.attempt, queue_wait_seconds=round(waited, 3))


def job_retrying(*, job: Job, backoff_seconds: int) -> None:
    """A failed run that its retry policy runs again (RETRY, the next attempt)."""
    log.info("job retrying", **_about(job), attempt=job.attempt, error_type=error_type(job.error),
             backoff_seconds=backoff_seconds)


def job_retry_marked(*, job_id: uuid.UUID, retrying: bool) -> None:
    """A running step waits to retry a transient failure (RETRY), or goes on (STARTED)."""
    log.info("job retrying" if retrying else "job resumed", job_id=job_id,
             status=Job.Status.RETRY if retrying else Job.Status.STARTED)


def job_cancel_requested(*, job: Job) -> None:
    """A cancel (the client's, or its deadline) reached a job that is running: it stops within
    a step, and its final state is logged then."""
    log.info("job cancel requested", **_about(job), reason=error_type(job.error) or "client")


def job_finished(*, job: Job) -> None:
    """A final state, written in the caller's transaction: counted and logged on commit."""
    transaction.on_commit(lambda: _finished(job))


def _finished(job: Job) -> None:
    finished_at = job.finished_at or timezone.now()
    ran = (finished_at - job.started_at).total_seconds() if job.started_at else None
    metrics.job_finished(job_name=job.job_name, status=job.status, ran_seconds=ran)
    log.info("job finished", **_about(job), status=job.status, error_type=error_type(job.error),
             run_seconds=None if ran is None else round(ran, 3))
