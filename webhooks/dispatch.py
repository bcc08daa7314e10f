"""Handing delivery attempts to the broker: on commit, as countdowns for short retries, and the
dispatcher (periodic) that publishes what is due and what no message carries any more.

Tasks are published by name, so nothing here imports the tasks that run them.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import timedelta

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from core.celery import app
from webhooks.models import Delivery

logger = logging.getLogger(__name__)

ATTEMPT_TASK = "webhooks.deliveries_attempt"
# The most deliveries one message carries (and one worker sends side by side).
BATCH_MAX_DELIVERIES = 20
# Delays up to this long are published as a countdown message; longer ones wait on the row
# for the dispatcher (a long-held ETA message is redelivered by Redis after its visibility
# timeout and gets a RabbitMQ consumer dropped).
COUNTDOWN_MAX_SECONDS = 60
# A published attempt that has not run after this long is published again (its message was
# lost, or its worker died); a duplicate is harmless because the attempt must claim the row.
REDISPATCH_AFTER_SECONDS = 600


def deliveries_publish(*, delivery_ids: list[int], countdown: float | None = None) -> None:
    """Queue attempts of some deliveries, one message (raises when the broker is unreachable).

    Published through our app by name rather than through a shared task's proxy: the proxy
    follows Celery's thread-local "current app", which any other Celery() made in the thread
    (a tool, a test's probe) silently replaces, broker and key prefix included.
    """
    app.send_task(ATTEMPT_TASK, kwargs={"delivery_ids": delivery_ids}, countdown=countdown)


def deliveries_publish_or_release(*, delivery_ids: Sequence[int], countdown: float | None = None) -> int:
    """Publish attempts, BATCH_MAX_DELIVERIES a message; what the broker refuses is left to the
    dispatcher. Returns how many were published."""
    for start in range(0, len(delivery_ids), BATCH_MAX_DELIVERIES):
        batch = list(delivery_ids[start : start + BATCH_MAX_DELIVERIES])
        try:
            deliveries_publish(delivery_ids=batch, countdown=countdown)
        except Exception:  # the broker's client raises many types; every one means "not published"
            logger.warning("Could not publish deliveries %s...; the dispatcher will", batch[0], exc_info=True)
            Delivery.objects.filter(pk__in=delivery_ids[start:], state=Delivery.State.PENDING).update(
                dispatched_at=None
            )
            return start
    return len(delivery_ids)


def deliveries_publish_on_commit(*, delivery_ids: list[int], countdown: float | None = None) -> None:
    """Publish the deliveries' next attempts once the caller's transaction commits."""
    transaction.on_commit(lambda: deliveries_publish_or_release(delivery_ids=delivery_ids, countdown=countdown))


def deliveries_dispatch_due(*, limit: int = 500) -> int:
    """The dispatcher (periodic): publish attempts that are due and that no task is carrying."""
    now = timezone.now()
    with transaction.atomic():
        due = list(
            Delivery.objects.select_for_update(skip_locked=True)
            .filter(state=Delivery.State.PENDING, next_attempt_at__lte=now)
            .filter(Q(claimed_until__isnull=True) | Q(claimed_until__lt=now))
            .filter(
                Q(dispatched_at__isnull=True)
                | Q(dispatched_at__lt=now - timedelta(seconds=REDISPATCH_AFTER_SECONDS))
                # An expired claim: the worker sending it died mid-attempt, and the message
                # that carried it was spent (acked, or redelivered while the claim still held).
                | Q(claimed_until__lt=now)
            )
            .order_by("next_attempt_at")
            .values_list("pk", flat=True)[:limit]
        )
        if not due:
            return 0
        # Clearing an expired claim stops the next tick from matching the row again before
        # the republished attempt has run; the claim token stays, so a slow (not dead) holder
        # can still record its outcome until someone claims anew.
        Delivery.objects.filter(pk__in=due).update(dispatched_at=now, claimed_until=None)
    return deliveries_publish_or_release(delivery_ids=due)
