"""Handing jobs to the broker: the Celery chain that runs a job, handing it over once its row is
committed, the sweeper that publishes what waits (refused by the broker, or over its owner's
running cap), and revoking a queued job.

Where CACHE_URL is a Redis, a submission does not publish: its job's id goes onto the handover
list there (one RPUSH, a fraction of a publish's CPU), and the publisher (jobs/publisher.py), a
thread of the worker that serves the `maintenance` queue, claims the jobs it takes off the list
and publishes them. The job's row is the record: it waits for dispatch (`dispatched_at` unset)
until the publisher claims it, so an id lost between the list and the broker (a worker killed
mid-batch) leaves a job the sweeper publishes after JOB_DISPATCH_GRACE_SECONDS. Without that
Redis (`make run`'s embedded mode), with it unreachable, or with no publisher alive (each says
so in Redis every second), the request publishes as before.

Tasks are published by name (`app.signature`), so nothing here imports the tasks that run them.
"""
from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import redis
from celery import chain
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from core import cache_redis, logs
from core.celery import app
from jobs import sql
from jobs.models import Job
from jobs.registry import job_type_get

logger = logging.getLogger(__name__)

RUN_STEP_TASK = "jobs.run_step"
DISPATCH_OWNER_TASK = "jobs.dispatch_owner"
# The chain's tail when the job has a callback (webhooks/tasks.py).
SEND_FOR_SUBJECT_TASK = "webhooks.deliveries_send_for_subject"


def job_signatures(*, job: Job) -> list[Any]:
    """The Celery signatures that run `job`: its steps, then the webhook tail if it has a callback.

    The first step's task id is the job's id, so a queued job can be revoked by id. Each message
    carries its arguments' text for monitors: Celery's saferepr would write the same for these
    short values, at a sixth of a publish's CPU (docs/benchmarks.md, "Fixes")."""
    job_type = job_type_get(job.job_name)
    options = {
        "queue": job_type.queue,
        "soft_time_limit": job_type.soft_time_limit_seconds,
        "time_limit": job_type.time_limit_seconds,
    }
    first = {"job_id": str(job.id), "index": 0}
    signatures = [
        app.signature(RUN_STEP_TASK, kwargs=first, immutable=True).set(
            task_id=str(job.id), argsrepr="()", kwargsrepr=repr(first), **options
        )
    ]
    signatures += [
        app.signature(RUN_STEP_TASK, kwargs={"job_id": str(job.id), "index": index}).set(**options)
        for index in range(1, len(job_type.steps))
    ]
    if job.callback_url:
        tail = {"subject_id": str(job.id)}
        signatures.append(
            app.signature(SEND_FOR_SUBJECT_TASK, kwargs=tail, immutable=True).set(
                argsrepr="()", kwargsrepr=repr(tail)
            )
        )
    return signatures


def job_publish(*, job: Job) -> None:
    """Send the job's first message to the broker (raises when the broker is unreachable)."""
    signatures = job_signatures(job=job)
    if len(signatures) == 1:
        signatures[0].apply_async()
    else:
        chain(*signatures).apply_async()


def job_publish_or_release(*, job: Job) -> bool:
    """Publish a claimed job; on any broker failure release the claim for the sweeper."""
    try:
        job_publish(job=job)
    except Exception:  # the broker's client raises many types; every one means "not published"
        logger.warning("Could not publish job %s; the sweeper will retry", job.id, exc_info=True)
        Job.objects.filter(pk=job.pk, status=Job.Status.PENDING).update(dispatched_at=None)
        return False
    return True


def handover_key() -> str:
    """The Redis list of handed-over jobs, oldest first (`handover_entry` each)."""
    return cache_redis.queue_key("jobs:handover")


# A handed-over job: its id, and the log context (request id, client) its publish carries on.
HandedOver = tuple[uuid.UUID, dict[str, Any]]


def handover_entry(*, job: Job) -> str:
    """`job` as the handover list holds it, with the context logged where it was submitted."""
    return json.dumps({"job": str(job.id), "log": logs.propagated()}, separators=(",", ":"))


def handover_parse(raw: bytes) -> HandedOver:
    entry = json.loads(raw)
    return uuid.UUID(entry["job"]), dict(entry.get("log") or {})


def handover_configured() -> bool:
    """Whether submissions may hand their jobs to a publisher (CACHE_URL is a Redis)."""
    return cache_redis.configured()


def publisher_alive_key() -> str:
    """Set by each running publisher, lasting PUBLISHER_ALIVE_SECONDS, refreshed every second."""
    return cache_redis.queue_key("jobs:publisher-alive")


PUBLISHER_ALIVE_SECONDS = 3.0
# How long a process goes by what it last read of a publisher being alive (seconds).
PUBLISHER_CHECK_SECONDS = 1.0
_publisher_checked: tuple[float, bool] = (float("-inf"), False)

# Until when (time.monotonic()) submissions publish from the request: the list was unreachable.
_handover_down_until = 0.0
HANDOVER_RETRY_SECONDS = 5.0


def handover_available() -> bool:
    """Whether a submission hands its job over: CACHE_URL is a Redis that answered lately, and
    a publisher said it is alive within PUBLISHER_ALIVE_SECONDS (read at most once every
    PUBLISHER_CHECK_SECONDS per process). Otherwise the request publishes, so a deployment whose
    publisher is missing (no worker serves `maintenance`) still runs its jobs."""
    global _publisher_checked, _handover_down_until
    if not handover_configured() or time.monotonic() < _handover_down_until:
        return False
    checked_at, alive = _publisher_checked
    if time.monotonic() - checked_at >= PUBLISHER_CHECK_SECONDS:
        try:
            alive = bool(cache_redis.queue_client().exists(publisher_alive_key()))
        except redis.RedisError:
            alive = False
            _handover_down_until = time.monotonic() + HANDOVER_RETRY_SECONDS
        _publisher_checked = (time.monotonic(), alive)
    return alive


def job_hand_over(*, job: Job) -> None:
    """Put a committed job on the handover list for the publisher; with the list's Redis
    unreachable (now, or within HANDOVER_RETRY_SECONDS), claim and publish it here."""
    global _handover_down_until
    if time.monotonic() >= _handover_down_until:
        try:
            cache_redis.queue_client().rpush(handover_key(), handover_entry(job=job))
            return
        except redis.RedisError:
            _handover_down_until = time.monotonic() + HANDOVER_RETRY_SECONDS
            logger.warning("The handover list is unreachable; jobs are published from the request for %s s",
                           HANDOVER_RETRY_SECONDS, exc_info=True)
    jobs_publish_handed_over(handed=[(job.id, {})])  # the request's own context is bound


def jobs_publish_handed_over(*, handed: Sequence[HandedOver]) -> int:
    """Claim the handed-over jobs still waiting for dispatch (not canceled, not taken by the
    sweeper) and publish them, each with the log context it was submitted in; how many were
    published."""
    contexts = dict(handed)
    published = 0
    for job in sql.jobs_claim_for_dispatch(job_ids=list(contexts), now=timezone.now()):
        with logs.bound(**contexts[job.id]):
            published += job_publish_or_release(job=job)
    return published


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
    for published, job in enumerate(claimed):
        if not job_publish_or_release(job=job):
            # The broker is still down: release the rest too and try on the next sweep.
            rest = [later.pk for later in claimed[published + 1 :]]
            Job.objects.filter(pk__in=rest, status=Job.Status.PENDING).update(dispatched_at=None)
            return published
    return len(claimed)


def owner_dispatch_request(*, owner_id: uuid.UUID) -> None:
    """Ask a worker to publish the owner's waiting jobs (a batch just accepted): one message,
    where publishing each job would cost the request one each. If the broker refuses it, the
    sweeper publishes them on its next run."""
    try:
        app.send_task(DISPATCH_OWNER_TASK, kwargs={"owner_id": str(owner_id)})
    except Exception:  # the broker's client raises many types; every one means "not published"
        logger.warning("Could not ask for owner %s's dispatch; the sweeper will", owner_id, exc_info=True)


def job_revoke_queued(*, job_id: uuid.UUID) -> None:
    """Best effort: tell workers to drop the queued message. The REVOKED row already stops it."""
    try:
        app.control.revoke(str(job_id))
    except Exception:  # the broker may be down; the row's status makes the revoke redundant
        logger.warning("Could not broadcast revoke for job %s", job_id, exc_info=True)
