"""Celery tasks for webhook delivery; all run on the `webhooks` queue (CELERY_TASK_ROUTES).

Tasks take ids. None of them raises for a failed delivery: the outcome is an attempt row, and
the next attempt's time is on the delivery row. With late acks (the global setting) a worker
that dies mid-attempt leaves its message to be redelivered, and the row's expired claim lets
the redelivered message (or the dispatcher) take the delivery over.
"""
from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from celery import shared_task
from django.conf import settings
from django.db import DatabaseError
from django.utils import timezone

from core.housekeeping import (
    batches_lease_seconds,
    look_again_after_a_dead_run,
    run_alone,
)
from core.rows_apart import RowsApart
from webhooks import attempts, dispatch, outbox, reschedule, secrets

# An attempt ends by itself within WEBHOOK_TIMEOUT_SECONDS + core.deadlines.SLACK_SECONDS,
# however the receiver drips (core/http.py), well before its claim
# (webhooks.claims.claim_lease_seconds) expires: that, not these limits, bounds a delivery. The
# deliveries worker runs a pool of threads, where Celery enforces no time limit; these are a
# backstop for a worker run with processes (prefork), above anything an attempt can take.
_SOFT_LIMIT_SECONDS = settings.WEBHOOK_TIMEOUT_SECONDS * 2 + 15
_HARD_LIMIT_SECONDS = settings.WEBHOOK_TIMEOUT_SECONDS * 2 + 30


# Every sending task: the database being briefly unreachable is the one failure worth a quick
# retry; anything else is left to the dispatcher, which republishes once the claim has expired
# (without it a database blip left a job's final webhook to the dispatcher, which republishes a
# published delivery only after REDISPATCH_AFTER_SECONDS).
_SENDING: dict[str, Any] = {
    "ignore_result": True, "autoretry_for": (DatabaseError,), "retry_backoff": 5, "max_retries": 5,
}
# Tasks that may send several batches, one after another.
_BATCHES_LIMITS = {"soft_time_limit": _SOFT_LIMIT_SECONDS * 5, "time_limit": _HARD_LIMIT_SECONDS * 5}


@shared_task(name=dispatch.ATTEMPT_TASK, soft_time_limit=_SOFT_LIMIT_SECONDS, time_limit=_HARD_LIMIT_SECONDS,
             **_SENDING)
def deliveries_attempt(*, delivery_ids: list[int]) -> None:
    """Send the deliveries' next attempts, side by side."""
    attempts.deliveries_attempt(delivery_ids=delivery_ids)


@shared_task(name=dispatch.DRAIN_TASK, **_BATCHES_LIMITS, **_SENDING)
def deliveries_drain() -> None:
    """Send what the due queue holds, a batch at a time, until it is empty."""
    attempts.deliveries_drain()


@shared_task(name="webhooks.deliveries_send_for_subject", **_BATCHES_LIMITS, **_SENDING)
def deliveries_send_for_subject(previous: object = None, *, subject_id: str) -> None:
    """The tail of a job's chain: send the job's recorded events that are due."""
    attempts.deliveries_send_for_subject(subject_id=uuid.UUID(subject_id))


@shared_task(name=reschedule.RESCHEDULE_TASK, **_SENDING)
def endpoint_reschedule(*, endpoint_id: str, version: int, before: str, after: list[Any] | None = None) -> None:
    """Reschedule a batch of an endpoint's waiting deliveries after its pace or enabled changed,
    and ask for the next batch while there is one."""
    at = datetime.fromisoformat(before)
    position = (datetime.fromisoformat(after[0]), int(after[1])) if after else None
    next_position = reschedule.endpoint_reschedule(
        endpoint_id=uuid.UUID(endpoint_id), version=version, before=at, after=position
    )
    if next_position is not None:
        reschedule.endpoint_reschedule_next(
            endpoint_id=uuid.UUID(endpoint_id), version=version, before=at, after=next_position
        )


@shared_task(name="webhooks.deliveries_dispatch_due", ignore_result=True)
def deliveries_dispatch_due() -> int:
    """Periodic (beat): publish attempts whose time has come, and start again the endpoints'
    reschedulings whose message was lost, each endpoint apart: the run ends in RowsFailed, once
    the attempts are published, if one raised (core/rows_apart.py)."""
    apart = RowsApart(task="webhooks.deliveries_dispatch_due", what="endpoint")
    reschedule.endpoints_reschedule_stalled(apart=apart)
    published = dispatch.deliveries_dispatch_due()
    apart.end()
    return published


@shared_task(name="webhooks.prune", bind=True, ignore_result=True)
def webhooks_prune(self: Any) -> dict[str, int]:
    """Periodic: delete events (with their deliveries and attempts) past their retention, and
    signing secrets whose overlap has ended. A run that stopped at its cap of events queues the
    next at once, behind what the maintenance queue holds: beat's hourly run alone deleted at most
    100,000 events an hour, so a service that recorded more kept them for good."""
    now = timezone.now()
    # One run at a time, as jobs.prune (jobs/tasks.py): the next queued once this one's slot is let
    # go. Its bound: the events' batches, and one for the signing secrets' DELETE. A redelivered
    # run that finds the slot held (its own, its worker killed) looks again once the lease is out.
    lease = batches_lease_seconds(outbox.PRUNE_MAX_BATCHES + 1)
    with run_alone("webhooks.prune", lease=lease) as alone:
        if not alone:
            look_again_after_a_dead_run(self, lease=lease)
            return {}
        counts = {
            "events": outbox.events_prune(older_than=now - timedelta(days=settings.WEBHOOK_EVENT_RETENTION_DAYS),
                                          batch_size=outbox.PRUNE_BATCH_SIZE, max_batches=outbox.PRUNE_MAX_BATCHES),
            "signing_secrets": secrets.signing_secrets_prune(now=now),
        }
    if counts["events"] >= outbox.PRUNE_BATCH_SIZE * outbox.PRUNE_MAX_BATCHES:
        self.apply_async()
    return counts
