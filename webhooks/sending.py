"""Sending a claimed batch: each attempt within its receiver's share, side by side, and whatever
happens to one never reaches the others.

- A receiver's share: at most WEBHOOK_MAX_IN_FLIGHT_PER_HOST attempts to one host (its name and
  port) at once, across every deliveries worker (core/slots.py, leased in Redis). An attempt
  that finds the host's slots taken by young attempts waits for one (a fast receiver frees one
  in milliseconds; SLOT_WAIT_SECONDS at most); behind slow ones (SLOW_ATTEMPT_SECONDS) it is
  put back at once: its claim and its attempt row undone, due again a
  little later, on a countdown message. It holds no worker while it waits, spends none of its
  attempts, and keeps its place (claims take the oldest due deliveries first).
- Side by side: a batch's attempts each on a thread of the batch's own, so a batch takes as long
  as its slowest receiver, which core/http.py bounds (WEBHOOK_TIMEOUT_SECONDS + slack); no
  thread is shared with another batch, so no receiver can hold up someone else's.
- Never reaching the others: an attempt that raises (which core/http.py should make impossible)
  is recorded as its own error; the batch goes on.
"""
from __future__ import annotations

import logging
import random
import uuid
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
    """Each claim's result, in order; None for one that got no slot (put it back)."""
    if len(claims) == 1:
        return [_send_in_turn(claims[0], send)]
    with ThreadPoolExecutor(max_workers=len(claims), thread_name_prefix="webhook") as senders:
        return list(senders.map(lambda claimed: _send_in_turn(claimed, send), claims))


def _send_in_turn(claimed: Claimed, send: Send) -> http.HttpResult | None:
    slot = slots.acquire(
        host_of(claimed.url), limit=settings.WEBHOOK_MAX_IN_FLIGHT_PER_HOST, lease_seconds=slot_lease_seconds(),
        wait_seconds=SLOT_WAIT_SECONDS, wait_while_held_under_seconds=SLOW_ATTEMPT_SECONDS,
    )
    if slot is None:
        return None
    try:
        return send(claimed)
    except Exception as exc:  # one attempt's surprise is its outcome, not its batch's end
        logger.exception("Delivery %s: the attempt raised", claimed.delivery_id)
        return http.HttpResult(error=f"Internal error while sending: {type(exc).__name__}")
    finally:
        slot.release()


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
