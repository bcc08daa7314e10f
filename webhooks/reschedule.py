"""Rescheduling an endpoint's waiting deliveries after its client changes its pace or enables or
disables it, or the service disables it as failing (webhooks/health.py): in batches of
RESCHEDULE_BATCH, each a task of its own on the deliveries workers, never in the request (or
the attempts' transaction) that made the change.

A request that rewrote every waiting delivery (and made them all due, for the workers to claim
and put back at the new pace) held its API process for seconds with a large backlog: 5.3 s at
200,000 waiting deliveries, and 200,000 ids pushed onto the due queue at once (docs/webhooks.md,
"Pace"). Now the request saves the endpoint with its `schedule_version` one
higher and asks for the first batch; each batch locks the endpoint, stops if a later change
came (another version), and asks for the next one while it finds a full batch:

- enabled: its deliveries held while it was disabled, and those paced before the change and
  not yet due, oldest first, are given its next slots at its current pace (at once without
  one); those due within dispatch.COUNTDOWN_MAX_SECONDS are published, the later ones wait on
  their rows for the dispatcher. So the backlog goes out at the new pace, never all at once.
- disabled: its pending deliveries are held (state endpoint_disabled). Until then a claim holds
  any that falls due (webhooks/claims.py), so none is sent meanwhile.

The endpoint's `rescheduling_since` says when the last batch asked for the next; should that
message be refused or lost, the dispatcher starts the rescheduling again after
dispatch.REDISPATCH_AFTER_SECONDS, as it republishes a lost attempt.
"""
from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta
from functools import partial

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from core import pause
from core.celery import app
from core.rows_apart import RowsApart
from webhooks import dispatch, outbox, sql
from webhooks.models import Delivery, Endpoint

logger = logging.getLogger(__name__)

State = Delivery.State
RESCHEDULE_TASK = "webhooks.endpoint_reschedule"
# The most deliveries one batch moves: one UPDATE of them, a few milliseconds.
RESCHEDULE_BATCH = 500
# How long after a change its rescheduling starts (s): changes made in a burst (a client may
# make hundreds a minute) cost the workers one rescheduling, the last one's; the earlier ones'
# first batches find a newer version and stop at once.
RESCHEDULE_SETTLE_SECONDS = 1.0


def endpoint_reschedule_on_commit(*, endpoint: Endpoint) -> None:
    """The endpoint's pace or enabled changed: a new `schedule_version` (saved by the caller, in
    its transaction), and the rescheduling of its deliveries recorded until now asked for once
    that commits."""
    endpoint.schedule_version += 1
    endpoint.rescheduling_since = timezone.now()
    kwargs = {"endpoint_id": str(endpoint.pk), "version": endpoint.schedule_version,
              "before": timezone.now().isoformat()}
    transaction.on_commit(lambda: _publish(kwargs, countdown=RESCHEDULE_SETTLE_SECONDS))


def _publish(kwargs: dict[str, object], *, countdown: float | None = None) -> None:
    pause.broker.attempt(partial(app.send_task, RESCHEDULE_TASK, kwargs=kwargs, countdown=countdown), logger,
                         "Could not reschedule endpoint %s's deliveries", kwargs["endpoint_id"])


def endpoint_reschedule(*, endpoint_id: uuid.UUID, version: int, before: datetime,
                        after: tuple[datetime, int] | None = None) -> tuple[datetime, int] | None:
    """Reschedule the next batch of the endpoint's deliveries recorded before `before` (after
    the delivery `after`, when enabled); where the next batch starts, or None when this was the
    last, or when the endpoint changed again (or went) since `version`."""
    now = timezone.now()
    with transaction.atomic():
        # FOR NO KEY UPDATE: the endpoint's events being recorded meanwhile do not wait for the
        # batch (webhooks/endpoints.py _locked).
        endpoint = (Endpoint.objects.select_for_update(no_key=True)
                    .filter(pk=endpoint_id, schedule_version=version).first())
        # Not while its client is being deleted (its endpoints and deliveries go with it): a
        # batch at the endpoint's pace writes the endpoint twice, which waits at commit for the
        # client, while the deletion waits for the batch's deliveries (webhooks/sql.py owner_hold).
        if endpoint is None or not sql.owner_hold(endpoint.owner_id, unless_deleting=True):
            return None
        after = _hold(endpoint, before, now) if not endpoint.enabled else _move(endpoint, before, after, now)
        # Under way while a next batch is to come: the dispatcher starts again one whose message
        # was lost.
        endpoint.rescheduling_since = now if after is not None else None
        endpoint.save(update_fields=["rescheduling_since"])
    return after


def _move(endpoint: Endpoint, before: datetime, after: tuple[datetime, int] | None,
          now: datetime) -> tuple[datetime, int] | None:
    """Give a batch of the enabled endpoint's waiting deliveries its next slots; where the next
    batch starts, or None after the last."""
    waiting = Delivery.objects.filter(endpoint=endpoint, created_at__lt=before).filter(
        Q(state=State.ENDPOINT_DISABLED)
        # Paced at an earlier pace and not yet due: first attempts only (a retry keeps its
        # back-off), none under way.
        | Q(state=State.PENDING, attempt_count=0, next_attempt_at__gt=now, claimed_until__isnull=True)
    )
    if after is not None:  # (the first condition bounds the index's range, the second the row's place)
        waiting = waiting.filter(created_at__gte=after[0]).filter(
            Q(created_at__gt=after[0]) | Q(created_at=after[0], pk__gt=after[1])
        )
    batch = list(waiting.order_by("created_at", "pk").select_for_update(skip_locked=True)
                 .only("pk", "created_at")[:RESCHEDULE_BATCH])
    if not batch:
        return None
    slots = outbox.endpoint_slots(endpoint_id=endpoint.pk, count=len(batch), now=now)
    publish_by = now + timedelta(seconds=dispatch.COUNTDOWN_MAX_SECONDS)
    for delivery, due in zip(batch, slots, strict=True):
        delivery.next_attempt_at, delivery.dispatched_at = due, now if due <= publish_by else None
    sql.deliveries_reschedule([(d.pk, d.next_attempt_at, d.dispatched_at) for d in batch])
    dispatch.deliveries_publish_on_commit(delivery_ids=[d.pk for d in batch if d.next_attempt_at <= now])
    for delivery in batch:  # paced: each at its slot (later ones wait for the dispatcher)
        if now < delivery.next_attempt_at <= publish_by:
            dispatch.deliveries_publish_on_commit(
                delivery_ids=[delivery.pk], countdown=(delivery.next_attempt_at - now).total_seconds()
            )
    last = batch[-1]
    return (last.created_at, last.pk) if len(batch) == RESCHEDULE_BATCH else None


def _hold(endpoint: Endpoint, before: datetime, now: datetime) -> tuple[datetime, int] | None:
    """Hold a batch of the disabled endpoint's pending deliveries (but a test event's, which goes
    all the same: sql.HELD_WHILE_DISABLED). Those held leave the selection: the next batch
    ignores its position.

    One whose attempt is in flight (its claim's lease running) is left to the claim's holder,
    which records the outcome; should it be a retry, the claim that takes it holds it. Held
    from under its claim, a delivery the receiver answered 2xx stayed held (its outcome,
    recorded by the holder of a claim no longer there, moved nothing), and enabling the endpoint
    sent it again."""
    pending = Delivery.objects.filter(endpoint=endpoint, state=State.PENDING, created_at__lt=before).exclude(
        subject_id=endpoint.pk
    ).filter(Q(claimed_until__isnull=True) | Q(claimed_until__lt=now))
    ids = list(pending.select_for_update(skip_locked=True).values_list("pk", flat=True)[:RESCHEDULE_BATCH])
    Delivery.objects.filter(pk__in=ids).update(
        state=State.ENDPOINT_DISABLED, dispatched_at=None, claim_token=None, claimed_until=None
    )
    return (before, 0) if len(ids) == RESCHEDULE_BATCH else None


def endpoint_reschedule_next(*, endpoint_id: uuid.UUID, version: int, before: datetime,
                             after: tuple[datetime, int]) -> None:
    """Ask for the next batch (a task of its own, so no one task runs long)."""
    _publish({"endpoint_id": str(endpoint_id), "version": version, "before": before.isoformat(),
              "after": [after[0].isoformat(), after[1]]})


def endpoints_reschedule_stalled(*, apart: RowsApart, page_rows: int = 100) -> int:
    """The dispatcher (periodic): start again, from the first, each rescheduling whose next
    batch was not asked for in dispatch.REDISPATCH_AFTER_SECONDS (its message was refused or
    lost: held deliveries would stay held on an enabled endpoint); a new version stops the old
    one should it be only late. How many. Each endpoint apart (a savepoint each): one whose save
    raises is logged and left to the next run (`apart`), where it rolled the others back with it,
    run after run. One page of `page_rows` a run, from a random key (`apart.pages`), so that more
    endpoints that raise than a page do not hide the same others from every run; one page, as the
    run's one transaction holds each endpoint it read locked until it ends (an event for one waits
    there to be given its slot: webhooks/outbox.py)."""
    stalled_before = timezone.now() - timedelta(seconds=dispatch.REDISPATCH_AFTER_SECONDS)
    stalled = Endpoint.objects.select_for_update(skip_locked=True, no_key=True).filter(
        rescheduling_since__lt=stalled_before
    )
    with transaction.atomic():
        return apart.pages(stalled, _reschedule_again, key=lambda endpoint: endpoint.pk,
                           page_rows=page_rows, most_rows=page_rows)


def _reschedule_again(endpoint: Endpoint) -> int:
    with transaction.atomic():  # its request, should its save raise, goes with the savepoint
        endpoint.next_slot_at = None
        endpoint_reschedule_on_commit(endpoint=endpoint)
        endpoint.save(update_fields=["next_slot_at", "schedule_version", "rescheduling_since"])
    return 1
