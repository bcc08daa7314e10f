"""Sending a claimed batch: each attempt within its receiver's share, side by side, and whatever
happens to one never reaches the others.

- A receiver's share: at most WEBHOOK_MAX_IN_FLIGHT_PER_HOST attempts to one host (its name and
  port) at once, across every deliveries worker (core/slots.py, leased in Redis). A batch sends
  a host's deliveries on lanes, each holding one of the host's slots and sending one delivery
  after another while the receiver answers quickly (over one kept-alive connection: the slot
  is taken once for many attempts, not once each). A lane that finds the host's slots taken by
  young attempts waits for one (a fast receiver frees one in milliseconds; SLOT_WAIT_SECONDS at
  most); behind slow ones (SLOW_ATTEMPT_SECONDS) it gives up at once. What no lane sent is put
  back: its claim and its attempt row undone, due again a little later, on a countdown
  message. It holds no worker while it waits, spends none of its attempts, and keeps its place
  (claims take the oldest due deliveries first).
- Side by side: a batch's lanes each on a thread of the batch's own, so a batch takes as long
  as its slowest lane, which core/http.py's limit on an attempt and the lane's own limit bound
  (two attempts' limits); no thread is shared with another batch, so no receiver can hold up
  someone else's.
- Never reaching the others: an attempt that raises (which core/http.py should make impossible)
  is recorded as its own error; the batch goes on.
"""
from __future__ import annotations

import logging
import random
import threading
import time
import weakref
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from urllib.parse import urlsplit

import redis
from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from core import cache_redis, deadlines, http
from core.slots import Slots
from webhooks import dispatch
from webhooks.claims import Claimed
from webhooks.models import Delivery, DeliveryAttempt

logger = logging.getLogger(__name__)

# How long an attempt may wait on its thread for a slot of its host before being put back (s):
# only while the host's attempts in flight are young (a fast receiver frees a slot in
# milliseconds); behind attempts older than SLOW_ATTEMPT_SECONDS it is put back at once.
SLOT_WAIT_SECONDS = 2.0
SLOW_ATTEMPT_SECONDS = 0.5
# When a delivery put back is due again (s), and the random spread added so that those of a
# busy host do not all come back at once.
WAIT_TURN_SECONDS = 2.0
WAIT_TURN_JITTER_SECONDS = 1.0

Send = Callable[[Claimed], http.HttpResult]


def _redis() -> redis.Redis | None:
    # Embedded mode (`make run` without Redis): no shared slots, all admitted.
    return cache_redis.client() if cache_redis.configured() else None


slots = Slots(_redis, prefix=cache.make_key("webhook-slots:"))


def slot_lease_seconds() -> float:
    """A slot outlives the longest attempt, so only a dead worker's slot is left to expire."""
    return settings.WEBHOOK_TIMEOUT_SECONDS + deadlines.SLACK_SECONDS + 5


def host_of(url: str) -> str:
    """The receiver host an attempt counts against: its URL's host name and port."""
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return url[:200]  # the guard refuses it anyway; it still counts against something
    return f"{(parts.hostname or '').lower()}:{port}"


def send_batch(claims: Sequence[Claimed], send: Send) -> list[http.HttpResult | None]:
    """Each claim's result, in order; None for one that was not sent (put it back).

    A host's deliveries go out on lanes, as many as its limit allows (each delivery its own lane
    when there is no limit): a lane takes one of the host's slots and sends the host's waiting
    deliveries one after another over a kept-alive connection, while its receiver answers
    quickly. After a slow answer (SLOW_ATTEMPT_SECONDS), or once the lane has run for
    WEBHOOK_TIMEOUT_SECONDS, it takes no more: what is left is put back, so a batch ends within
    two attempts' limits, well inside its claims."""
    results: list[http.HttpResult | None] = [None] * len(claims)
    waiting_by_host: dict[str, deque[int]] = {}
    for index, claimed in enumerate(claims):
        waiting_by_host.setdefault(host_of(claimed.url), deque()).append(index)
    limit = settings.WEBHOOK_MAX_IN_FLIGHT_PER_HOST
    lanes = [
        (host, waiting)
        for host, waiting in waiting_by_host.items()
        for _ in range(min(len(waiting), limit) if limit > 0 else len(waiting))
    ]

    def lane(host: str, waiting: deque[int]) -> None:
        # This process's lanes to the host queue at its gate first, each woken the moment one
        # ends; only as many as the limit then ask Redis for a slot, instead of all polling it.
        # Both waits together last SLOT_WAIT_SECONDS at most.
        give_up_at = time.monotonic() + SLOT_WAIT_SECONDS
        gate = _gate(host, limit)
        if gate is not None and not gate.acquire(timeout=SLOT_WAIT_SECONDS):
            return
        try:
            slot = slots.acquire(
                host, limit=limit, lease_seconds=slot_lease_seconds(),
                wait_seconds=max(0.0, give_up_at - time.monotonic()),
                wait_while_held_under_seconds=SLOW_ATTEMPT_SECONDS,
            )
            if slot is None:
                return  # the host's other lanes (here or in other workers) take its deliveries
            try:
                _send_while_quick(waiting)
            finally:
                slot.release()
        finally:
            if gate is not None:
                gate.release()

    def _send_while_quick(waiting: deque[int]) -> None:
        stop_taking_at = time.monotonic() + settings.WEBHOOK_TIMEOUT_SECONDS
        while time.monotonic() < stop_taking_at:
            try:
                index = waiting.popleft()
            except IndexError:  # none left: this lane or another of the host sent them
                return
            started = time.monotonic()
            results[index] = _send_one(claims[index], send)
            if time.monotonic() - started >= SLOW_ATTEMPT_SECONDS:
                return

    if len(lanes) == 1:
        lane(*lanes[0])
    else:
        with ThreadPoolExecutor(max_workers=len(lanes), thread_name_prefix="webhook") as senders:
            list(senders.map(lambda each: lane(*each), lanes))
    return results


_gates: weakref.WeakValueDictionary[tuple[str, int], threading.BoundedSemaphore] = weakref.WeakValueDictionary()
_gates_lock = threading.Lock()


def _gate(host: str, limit: int) -> threading.BoundedSemaphore | None:
    """This process's gate to `host`: `limit` lanes through it at once (none without a limit).
    Kept while a lane holds it, so the gates of hosts no longer sent to go by themselves."""
    if limit <= 0:
        return None
    with _gates_lock:
        gate = _gates.get((host, limit))
        if gate is None:
            gate = _gates[(host, limit)] = threading.BoundedSemaphore(limit)
        return gate


def _send_one(claimed: Claimed, send: Send) -> http.HttpResult:
    try:
        return send(claimed)
    except Exception as exc:  # one attempt's surprise is its outcome, not its batch's end
        logger.exception("Delivery %s: the attempt raised", claimed.delivery_id)
        return http.HttpResult(error=f"Internal error while sending: {type(exc).__name__}")


def deliveries_put_back(*, claims: Sequence[Claimed], token: uuid.UUID) -> None:
    """Undo the claims of deliveries that found their host busy: no attempt made (its row goes,
    the count goes back), due again in a moment, published as a countdown."""
    if not claims:
        return
    delay = WAIT_TURN_SECONDS + random.uniform(0, WAIT_TURN_JITTER_SECONDS)  # a spread, not a secret
    now = timezone.now()
    ids = [claimed.delivery_id for claimed in claims]
    with transaction.atomic():
        DeliveryAttempt.objects.filter(pk__in=[claimed.attempt_id for claimed in claims]).delete()
        Delivery.objects.filter(pk__in=ids, claim_token=token).update(
            attempt_count=F("attempt_count") - 1, claim_token=None, claimed_until=None,
            next_attempt_at=now + timedelta(seconds=delay), dispatched_at=now,
        )
        dispatch.deliveries_publish_on_commit(delivery_ids=ids, countdown=delay)
