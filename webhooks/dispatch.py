"""Handing delivery attempts to the broker: on commit, as countdowns for short retries, and the
dispatcher (periodic) that publishes what is due and what no message carries any more.

Deliveries due at once (an event just recorded) go through the due queue: their ids are pushed
onto a list in the Redis behind CACHE_URL, and a drain message is published only when no drain
has been asked for since the last one started (a flag, set if absent). A drain takes the
queue's ids DRAIN_BATCH at a time and sends them, asking for another drain to join it while the
batches it takes are full. So a thousand events recorded one by one cost the broker a handful
of messages, not a thousand, and the worker claims, sends and records them in batches
(docs/webhooks.md, "How deliveries are sent"). Without Redis (`make run`'s embedded mode) or
with it unreachable, a message carries the ids themselves, as it does for a countdown; while
the broker is paused (core.pause.broker) none is tried and the dispatcher publishes them. For
QUEUE_RETRY_SECONDS after a call to that Redis failed, events go by message without asking it.

No wake-up is lost: an event pushes its ids before it sets the flag, and a drain clears the
flag before it takes ids, so ids pushed after a drain's last take find the flag clear and ask
for a new drain. A drain message the broker lost leaves the flag set for WAKE_FLAG_SECONDS at
most; the dispatcher's next tick then asks again while ids wait. A drain the broker refused, or
not asked for while the broker is paused (core.pause.broker), clears the flag at once.

Deliveries waiting for a place of a client's share of the receivers (webhooks/sending.py) are
parked: their ids in a sorted set per share in the same Redis, oldest first, each once. Nothing
runs for them while they wait; a lane that leaves a place of the share wakes the oldest (puts
them on the due queue). A parked delivery's row says it was dispatched, so should its wake-up
be lost (Redis lost its data) the dispatcher publishes it again after REDISPATCH_AFTER_SECONDS,
as it does a lost message.

Tasks are published by name, so nothing here imports the tasks that run them.
"""
from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from datetime import timedelta
from functools import partial
from typing import TypeVar

import redis
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from core import cache_redis, log_volume, pause
from core.celery import app
from webhooks.models import Delivery

logger = logging.getLogger(__name__)

T = TypeVar("T")
# While Redis is down every event's commit finds the due queue unreachable: said once a minute.
_unreachable = log_volume.Occasional(logger)

ATTEMPT_TASK = "webhooks.deliveries_attempt"
DRAIN_TASK = "webhooks.deliveries_drain"
# The most deliveries one message carries (and one worker sends side by side).
BATCH_MAX_DELIVERIES = 20
# The most deliveries a drain takes from the due queue and sends as one batch.
DRAIN_BATCH = 100
# How long one drain takes batches before handing the rest of the queue to a fresh drain (s):
# with its last batch (two attempts' limits at most) well inside the task's time limits.
DRAIN_MAX_SECONDS = 60
# How long a drain's wake-up flag holds without the drain starting (its message was lost).
WAKE_FLAG_SECONDS = 30
# Delays up to this long are published as a countdown message; longer ones wait on the row
# for the dispatcher (a long-held ETA message is redelivered by Redis after its visibility
# timeout and gets a RabbitMQ consumer dropped).
COUNTDOWN_MAX_SECONDS = 60
# A published attempt that has not run after this long is published again (its message was
# lost, or its worker died); a duplicate is harmless because the attempt must claim the row.
REDISPATCH_AFTER_SECONDS = 600
# After a call to the due queue's Redis fails, how long this process's events go by message
# without asking it (s): a Redis that hangs holds each call for its client's timeout (a second),
# and with it each event's commit (a cancel's request, a job's transition in a worker); paused,
# that wait falls on one event per process in that time. As long as the rate limiter's pause on
# the same Redis (core/ratelimit.py), but apart from it: that one is its limiter's, with the
# limiter's clock, made in the API processes only.
QUEUE_RETRY_SECONDS = 5.0
_queue_pause = pause.PauseAfterFailure(QUEUE_RETRY_SECONDS)


def deliveries_publish(*, delivery_ids: list[int], countdown: float | None = None) -> None:
    """Queue attempts of some deliveries, one message (raises when the broker is unreachable).

    Published through our app by name rather than through a shared task's proxy: the proxy
    follows Celery's thread-local "current app", which any other Celery() made in the thread
    (a tool, a test's probe) silently replaces, broker and key prefix included.
    """
    app.send_task(ATTEMPT_TASK, kwargs={"delivery_ids": delivery_ids}, countdown=countdown)


def deliveries_publish_or_release(*, delivery_ids: Sequence[int], countdown: float | None = None) -> int:
    """Publish attempts, BATCH_MAX_DELIVERIES a message; what the broker refuses is left to the
    dispatcher, as is everything while a publish from this process failed moments ago
    (core.pause.broker: not tried, rather than hold a request or a worker for the broker's
    timeout). Returns how many were published."""
    for start in range(0, len(delivery_ids), BATCH_MAX_DELIVERIES):
        batch = list(delivery_ids[start : start + BATCH_MAX_DELIVERIES])
        published = pause.broker.attempt(
            partial(deliveries_publish, delivery_ids=batch, countdown=countdown),
            logger, "Could not publish deliveries %s...; the dispatcher will", batch[0],
        )
        if not published:
            Delivery.objects.filter(pk__in=delivery_ids[start:], state=Delivery.State.PENDING).update(
                dispatched_at=None
            )
            return start
    return len(delivery_ids)


def deliveries_release_for_subject(*, subject_id: uuid.UUID) -> int:
    """Leave a subject's due deliveries that no attempt holds to the dispatcher's next run: the
    message that was to send them (a job chain's tail) was refused. How many."""
    return Delivery.objects.filter(
        subject_id=subject_id, state=Delivery.State.PENDING, next_attempt_at__lte=timezone.now(),
        dispatched_at__isnull=False, claimed_until__isnull=True,
    ).update(dispatched_at=None)


def deliveries_publish_on_commit(*, delivery_ids: list[int], countdown: float | None = None) -> None:
    """Hand the deliveries' next attempts over once the caller's transaction commits: to the
    due queue when they are due now, on a countdown message when they are due in a moment."""
    if countdown is None:
        transaction.on_commit(lambda: deliveries_queue(delivery_ids=delivery_ids))
    else:
        transaction.on_commit(lambda: deliveries_publish_or_release(delivery_ids=delivery_ids, countdown=countdown))


def _due_keys() -> tuple[str, str]:
    """The due queue's list of delivery ids, and the flag saying a drain has been asked for."""
    return cache_redis.queue_key("webhooks:due"), cache_redis.queue_key("webhooks:drain-asked")


def _on_due_queue(call: Callable[[redis.Redis], T], *, otherwise: T, failing: str = "") -> T:
    """`call` with the due queue's Redis client; `otherwise` without one (embedded mode) or when
    it fails, logged with what that means (`failing`) unless that is nothing worth a line. A
    failure starts the queue's pause (QUEUE_RETRY_SECONDS)."""
    if not cache_redis.configured():
        return otherwise
    try:
        return call(cache_redis.queue_client())
    except redis.RedisError as exc:
        _queue_pause.failed()
        if failing:
            _unreachable.warning("The due queue is unreachable; %s", failing, exc_info=exc)
        return otherwise


def deliveries_queue(*, delivery_ids: Sequence[int]) -> None:
    """Put due deliveries on the due queue and ask for a drain unless one is asked for already;
    a message carrying their ids instead when the queue's Redis is missing or unreachable, or
    failed moments ago (its pause). Only here is the pause kept: the other calls' fallbacks
    would lose time (a drain that takes nothing, ids not put back, parked ones not woken), where
    a message loses nothing."""
    if not delivery_ids:
        return
    queue, asked = _due_keys()

    def push(client: redis.Redis) -> bool:
        with client.pipeline(transaction=False) as pipe:
            pipe.rpush(queue, *delivery_ids)
            pipe.set(asked, 1, nx=True, ex=WAKE_FLAG_SECONDS)
            return bool(pipe.execute()[1])

    newly_asked = None if _queue_pause.paused() else _on_due_queue(
        push, otherwise=None, failing=f"deliveries {delivery_ids[0]}... go by message"
    )
    if newly_asked is None:
        deliveries_publish_or_release(delivery_ids=delivery_ids)
    elif newly_asked:
        _drain_publish()


def drain_ask() -> None:
    """Ask for a drain of the due queue, unless one is asked for already (a drain that took a
    full batch, or the dispatcher finding ids waiting)."""
    asked = _due_keys()[1]
    if _on_due_queue(lambda client: client.set(asked, 1, nx=True, ex=WAKE_FLAG_SECONDS), otherwise=False,
                     failing="no drain asked for"):
        _drain_publish()


def _drain_publish() -> None:
    """Publish a drain; when the broker refuses it, or a publish from this process failed
    moments ago (core.pause.broker: not tried, rather than hold a request for the broker's
    timeout), clear the flag instead: the next ids pushed ask again, and the dispatcher's next
    tick does while ids wait. The ids stay on the queue meanwhile."""
    if not pause.broker.attempt(partial(app.send_task, DRAIN_TASK), logger,
                                "Could not ask for a drain; the dispatcher will"):
        _drain_flag_clear()


def _drain_flag_clear() -> None:
    asked = _due_keys()[1]
    _on_due_queue(lambda client: client.delete(asked), otherwise=0, failing="its drain flag stays until it expires")


def drain_started() -> None:
    """A drain begins: ids pushed from now on ask for another one."""
    _drain_flag_clear()


def due_take(count: int) -> list[int]:
    """Up to `count` delivery ids from the due queue, oldest first (none if it is unreachable)."""
    queue = _due_keys()[0]
    taken = _on_due_queue(lambda client: client.lpop(queue, count), otherwise=None, failing="no ids taken")
    return [int(delivery_id) for delivery_id in taken or ()]


def due_put_back(delivery_ids: Sequence[int]) -> None:
    """Return taken ids to the head of the due queue (their drain could not send them)."""
    if delivery_ids:
        queue = _due_keys()[0]
        _on_due_queue(lambda client: client.lpush(queue, *reversed(delivery_ids)), otherwise=0,
                      failing=f"the dispatcher will republish {delivery_ids[0]}...")


def due_waiting() -> int:
    """How many ids the due queue holds (0 if it is unreachable)."""
    queue = _due_keys()[0]
    return int(_on_due_queue(lambda client: client.llen(queue), otherwise=0))


def _parked_key(share: str) -> str:
    return cache_redis.queue_key(f"webhooks:parked:{share}")


def deliveries_park(*, share: str, delivery_ids: Sequence[int]) -> bool:
    """Park deliveries until a place of `share` frees (`deliveries_wake`); one parked already
    keeps its place. False when they could not be (no Redis, or unreachable)."""

    key = _parked_key(share)

    def park(client: redis.Redis) -> bool:
        with client.pipeline(transaction=False) as pipe:
            pipe.zadd(key, {str(delivery_id): delivery_id for delivery_id in delivery_ids}, nx=True)
            pipe.expire(key, REDISPATCH_AFTER_SECONDS * 2)  # by then all were published again
            pipe.execute()
        return True

    return bool(delivery_ids) and _on_due_queue(park, otherwise=False, failing="deliveries wait on a timer instead")


def deliveries_wake(*, share: str, count: int = BATCH_MAX_DELIVERIES) -> int:
    """A place of `share` came free: its `count` oldest parked deliveries go on the due queue.
    How many."""
    taken = _on_due_queue(lambda client: client.zpopmin(_parked_key(share), count), otherwise=[],
                          failing="parked deliveries wait for the dispatcher")
    delivery_ids = [int(member) for member, _ in taken]
    deliveries_queue(delivery_ids=delivery_ids)
    return len(delivery_ids)


def deliveries_parked(*, share: str) -> list[int]:
    """The deliveries parked for `share`, oldest first (a look for tests and operators)."""
    return [int(member) for member in _on_due_queue(lambda client: client.zrange(_parked_key(share), 0, -1),
                                                     otherwise=[])]


def deliveries_dispatch_due(*, limit: int = 500) -> int:
    """The dispatcher (periodic): ask for a drain while the due queue holds ids, and publish
    attempts that are due and that no task is carrying."""
    if due_waiting():
        drain_ask()
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
