"""Sending a claimed batch: each attempt within its client's share, side by side, and whatever
happens to one never reaches the others.

- A client's share: at most WEBHOOK_MAX_IN_FLIGHT_PER_HOST of a client's attempts to one host
  (its name and port) at once, and WEBHOOK_MAX_IN_FLIGHT_PER_CLIENT to all its hosts, across
  every deliveries worker (core/slots.py, leased in Redis). Each client's share is its own: a
  client whose receivers hang (on its own hosts, or on paths of a host others use too) takes
  none of another client's, and holds at most its share of the workers' threads. A batch sends
  a client's deliveries to a host on lanes, each holding a place in both shares and sending
  one delivery after another while the receiver answers quickly (over one kept-alive
  connection: the places are taken once for many attempts, not once each). A lane that finds
  a share's places taken by young attempts waits for one (a fast receiver frees one in
  milliseconds; SLOT_WAIT_SECONDS at most), beside a lane of its batch or as its client's one
  waiting lane (webhooks/gates.py); behind slow ones (SLOW_ATTEMPT_SECONDS) it gives up at
  once. What no lane sent is put back: its claim and its attempt row undone, and parked
  for the share it waits for (webhooks/dispatch.py) until a lane leaves a place of it, which
  wakes the oldest parked. While it waits it costs nothing (no message, no claim, no worker),
  spends none of its attempts, and keeps its place. Without Redis it is due again a little
  later, on a countdown message.
- An endpoint's pace: an endpoint with a rate limit gets one attempt a turn (1 / its rate),
  across every deliveries worker (a turn in Redis). Its deliveries are given slots that far
  apart when recorded (webhooks/outbox.py), so a turn is usually free; those that are due
  together all the same (held ones sent when it is enabled again, recovered failures, a retry
  beside a new event, a countdown run late) wait on the lane for their turns, SLOT_WAIT_SECONDS
  at most each; one that cannot have its turn in that time is put back at the endpoint's next
  free slot.
- Side by side: a batch's lanes each on a thread of the batch's own, so a batch takes as long
  as its slowest lane, which core/http.py's limit on an attempt and the lane's own limit bound
  (two attempts' limits); no thread is shared with another batch, so no receiver can hold up
  someone else's, nor have an outcome recorded late: each is handed over as it comes
  (webhooks/handover.py).
- Never reaching the others: an attempt that raises (which core/http.py should make impossible)
  is recorded as its own error; the batch goes on.
"""
from __future__ import annotations

import logging
import random
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import cast
from urllib.parse import urlsplit

import redis
from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from core import cache_redis, deadlines, http
from core.slots import Slot, Slots
from webhooks import dispatch, gates, outbox
from webhooks.claims import Claimed
from webhooks.gates import SLOW_ATTEMPT_SECONDS, Place
from webhooks.handover import HandOver
from webhooks.models import ATTEMPT_INTERNAL_ERROR, Delivery, DeliveryAttempt

logger = logging.getLogger(__name__)

# How long an attempt may wait on its thread for a slot of its host before being put back (s):
# only while the host's attempts in flight are young (a fast receiver frees a slot in
# milliseconds; behind attempts older than SLOW_ATTEMPT_SECONDS it is put back at once), and
# only beside a lane of its batch or as its client's one waiting lane (webhooks/gates.py).
SLOT_WAIT_SECONDS = 2.0
# Without Redis to park it: when a delivery put back is due again (s), and the random spread
# added so that those of a busy host do not all come back at once.
WAIT_TURN_SECONDS = 2.0
WAIT_TURN_JITTER_SECONDS = 1.0

Send = Callable[[Claimed], http.HttpResult]
Finished = Callable[[list[tuple[Claimed, "http.HttpResult | Unsent"]]], None]


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


def host_share(owner_id: uuid.UUID, url: str) -> str:
    """The share an attempt to `url` counts against: its client's, at the URL's host."""
    return f"{owner_id}:{host_of(url)}"


def client_share(owner_id: uuid.UUID) -> str:
    """The share every attempt of a client counts against, whatever its host."""
    return f"client:{owner_id}"


@dataclass(frozen=True)
class Unsent:
    """A claim a batch did not send: it waits for a place of `share` (`limit` at once)."""

    share: str
    limit: int


def send_batch(claims: Sequence[Claimed], send: Send, finished: Finished) -> None:
    """Send the claims, handing `finished` each one's result as it comes (with those that came
    within RECORD_WITHIN_SECONDS of it: webhooks/handover.py), every one by the time this
    returns; Unsent for one that was not sent (put it back), once the lanes of its client's
    share of its host have ended.

    A client's deliveries to a host go out on lanes, as many as the host limit allows (each
    delivery its own lane when there is no limit): a lane takes a place in the client's shares
    and sends its waiting deliveries one after another over a kept-alive connection, while its
    receiver answers quickly. After a slow answer (SLOW_ATTEMPT_SECONDS), or once the lane has
    run for WEBHOOK_TIMEOUT_SECONDS, it takes no more: what is left is put back, so a batch ends
    within two attempts' limits, well inside its claims. Should `finished` raise, the lanes take
    no more, and it raises once they have ended."""
    results: list[http.HttpResult | Unsent | None] = [None] * len(claims)
    waiting_by_share: dict[tuple[str, str], deque[int]] = {}
    # The share each group's lanes last found without a place for them (by default, after a
    # slow answer: the host's).
    blocked_on: dict[tuple[str, str], Unsent] = {}
    groups = [(host_share(claimed.owner_id, claimed.url), client_share(claimed.owner_id)) for claimed in claims]
    for index, group in enumerate(groups):
        waiting_by_share.setdefault(group, deque()).append(index)
    host_limit = settings.WEBHOOK_MAX_IN_FLIGHT_PER_HOST
    client_limit = settings.WEBHOOK_MAX_IN_FLIGHT_PER_CLIENT
    batch = object()  # what the gates know this batch's lanes by
    lanes = [
        (to_host, to_client, waiting)
        for (to_host, to_client), waiting in waiting_by_share.items()
        for _ in range(min(len(waiting), host_limit) if host_limit > 0 else len(waiting))
    ]
    handover = HandOver((to_host, to_client) for to_host, to_client, _ in lanes)
    # The groups a lane of which raised: what they left is not put back (attempts.py sends it alone).
    tripped: set[tuple[str, str]] = set()

    def lane(to_host: str, to_client: str, waiting: deque[int]) -> None:
        # The client's share of the host first, then of all its hosts: a lane that holds the
        # one while it waits for the other keeps only that client's lanes waiting. Both waits
        # together last SLOT_WAIT_SECONDS at most.
        give_up_at = time.monotonic() + SLOT_WAIT_SECONDS
        try:
            with _share(to_host, host_limit, give_up_at, client=to_client, batch=batch) as to_host_place:
                if to_host_place is None:  # the client's other lanes to the host (here or elsewhere) take them
                    blocked_on[(to_host, to_client)] = Unsent(to_host, host_limit)
                    return
                with _share(to_client, client_limit, give_up_at, client=to_client, batch=batch) as to_client_place:
                    if to_client_place is None:
                        blocked_on[(to_host, to_client)] = Unsent(to_client, client_limit)
                        return
                    _send_while_quick(waiting, (to_host_place, to_client_place))
        except BaseException:
            tripped.add((to_host, to_client))
            raise
        finally:
            handover.lane_ended((to_host, to_client))

    def _send_while_quick(waiting: deque[int], places: tuple[Place, Place]) -> None:
        stop_taking_at = time.monotonic() + settings.WEBHOOK_TIMEOUT_SECONDS
        while time.monotonic() < stop_taking_at and not handover.stopped.is_set():
            try:
                index = waiting.popleft()
            except IndexError:  # none left: this lane or another of the share sent them
                return
            if not _turn_taken(claims[index], give_up_at=min(time.monotonic() + SLOT_WAIT_SECONDS, stop_taking_at)):
                return  # the endpoint's pace: this one (and what the lane has left) is put back
            started = time.monotonic()
            for place in places:
                place.attempt_begins(started)
            results[index] = _send_one(claims[index], send)
            handover.sent(index)
            if time.monotonic() - started >= SLOW_ATTEMPT_SECONDS:
                return

    def left_by(group: tuple[str, str]) -> list[int]:
        # What the group's lanes did not send, once they have all ended: it waits for a place of
        # the share they last found full. Nothing when one of them raised.
        if group in tripped:
            return []
        left = [index for index, each in enumerate(groups) if each == group and results[index] is None]
        for index in left:
            results[index] = blocked_on.get(group, Unsent(group[0], host_limit))
        return left

    def hand_over(indexes: list[int]) -> None:
        finished([(claims[index], cast(http.HttpResult | Unsent, results[index])) for index in indexes])

    if len(claims) == 1:  # nothing to hand over before its one attempt ends: no thread for it
        lane(*lanes[0])
        handover.run(left_by=left_by, finished=hand_over)
        return
    # Even a single lane runs on a thread of its own, so that its outcomes are handed over as
    # they come: on this one, they were once it ended.
    with ThreadPoolExecutor(max_workers=len(lanes), thread_name_prefix="webhook") as senders:
        running = [senders.submit(lane, *each) for each in lanes]
        handover.run(left_by=left_by, finished=hand_over)  # should it raise, the lanes take no more
    for each in running:
        each.result()  # a lane's own surprise, raised once what the others sent is handed over


@contextmanager
def _share(key: str, limit: int, give_up_at: float, *, client: str, batch: object) -> Iterator[Place | None]:
    """Hold one of `key`'s `limit` places, or None when none came free in time (always a place
    without a limit). This process's lanes queue at its gate first, each woken the moment one
    ends; only as many as the limit then ask Redis for a slot, instead of all polling it. Both
    wait only while the holders are quick (behind slow ones they give up at once), and only
    beside a lane of their `batch` or as the `client`'s one waiting lane (webhooks/gates.py)."""
    if limit <= 0:
        yield Place()
        return
    gate = gates.gate(key, limit)
    place = gate.enter(give_up_at, client=client, batch=batch)
    if place is None:
        yield None
        return
    try:
        slot = _slot_taken(key, limit, give_up_at, client=client)
        if slot is None:
            yield None
            return
        place.slot = slot
        try:
            yield place
        finally:
            slot.release()
    finally:
        gate.leave(place)
        if place.slot is not None:
            dispatch.deliveries_wake(share=key)  # what waited for the place it left


def _slot_taken(key: str, limit: int, give_up_at: float, *, client: str) -> Slot | None:
    """A slot of the share across processes: at once if one is free, else waited for by the
    client's waiting lane only."""
    take = partial(slots.acquire, key, limit=limit, lease_seconds=slot_lease_seconds(),
                   wait_while_held_under_seconds=SLOW_ATTEMPT_SECONDS)
    slot = take()
    if slot is not None or not gates.waiting.begin(client):
        return slot
    try:
        return take(wait_seconds=max(0.0, give_up_at - time.monotonic()))
    finally:
        gates.waiting.end(client)


def _turn_taken(claimed: Claimed, *, give_up_at: float) -> bool:
    """The endpoint's turn to be sent to, under its rate limit (at once without one)."""
    if not claimed.rate_limit_per_second:
        return True
    return slots.turn(
        _pace_key(claimed.endpoint_id), every_seconds=1 / claimed.rate_limit_per_second,
        wait_seconds=max(0.0, give_up_at - time.monotonic()),
    )


def _pace_key(endpoint_id: uuid.UUID | None) -> str:
    return f"pace:{endpoint_id}"


def endpoint_pace_reset(*, endpoint_id: uuid.UUID) -> None:
    """The endpoint's rate limit changed: the turn last taken at the old one ends now."""
    slots.turn_end(_pace_key(endpoint_id))


def _send_one(claimed: Claimed, send: Send) -> http.HttpResult:
    try:
        return send(claimed)
    except Exception as exc:  # one attempt's surprise is its outcome, not its batch's end
        logger.exception("Delivery %s: the attempt raised", claimed.delivery_id)
        return http.HttpResult(error=f"{ATTEMPT_INTERNAL_ERROR} sending: {type(exc).__name__}")


def deliveries_put_back(*, unsent: Sequence[tuple[Claimed, Unsent]], token: uuid.UUID) -> None:
    """Undo the claims of deliveries that were not sent: no attempt made (its row goes, the count
    goes back). One to an endpoint with a rate limit is due at the endpoint's next free slot, on
    a countdown message (past COUNTDOWN_MAX_SECONDS, the dispatcher publishes it then). The
    others are parked until a place of the share they wait for frees (webhooks/dispatch.py),
    woken at once if one is free by then; without Redis they are due again in a moment, on a
    countdown message."""
    if not unsent:
        return
    now = timezone.now()
    paced: dict[uuid.UUID, list[int]] = defaultdict(list)
    parked: dict[Unsent, list[int]] = defaultdict(list)
    for claimed, why in unsent:
        if claimed.rate_limit_per_second and claimed.endpoint_id is not None:
            paced[claimed.endpoint_id].append(claimed.delivery_id)
        else:
            parked[why].append(claimed.delivery_id)
    with transaction.atomic():
        DeliveryAttempt.objects.filter(pk__in=[claimed.attempt_id for claimed, _ in unsent]).delete()
        for why, ids in parked.items():
            _undo_claims(ids, token, due=now, dispatched_at=now)
            transaction.on_commit(lambda why=why, ids=ids: _park(why, ids))
        for endpoint_id, ids in paced.items():
            for delivery_id, due in zip(ids, outbox.endpoint_slots(endpoint_id=endpoint_id, count=len(ids), now=now),
                                        strict=True):
                countdown = (due - now).total_seconds()
                published = countdown <= dispatch.COUNTDOWN_MAX_SECONDS
                _undo_claims([delivery_id], token, due=due, dispatched_at=now if published else None)
                if published:
                    dispatch.deliveries_publish_on_commit(delivery_ids=[delivery_id], countdown=countdown or None)


def _undo_claims(delivery_ids: list[int], token: uuid.UUID, *, due: datetime, dispatched_at: datetime | None) -> None:
    # A delivery canceled under its claim (its endpoint deleted meanwhile) stays canceled.
    Delivery.objects.filter(pk__in=delivery_ids, claim_token=token, state=Delivery.State.PENDING).update(
        attempt_count=F("attempt_count") - 1, claim_token=None, claimed_until=None,
        next_attempt_at=due, dispatched_at=dispatched_at,
    )


def _park(why: Unsent, delivery_ids: list[int]) -> None:
    """Park deliveries for a place of their share; wake them at once if one freed meanwhile (its
    lane may have left before they were parked, finding none to wake)."""
    if not dispatch.deliveries_park(share=why.share, delivery_ids=delivery_ids):
        delay = WAIT_TURN_SECONDS + random.uniform(0, WAIT_TURN_JITTER_SECONDS)  # a spread, not a secret
        dispatch.deliveries_publish_or_release(delivery_ids=delivery_ids, countdown=delay)
        return
    free = slots.acquire(why.share, limit=why.limit, lease_seconds=slot_lease_seconds())
    if free is not None:
        free.release()
        dispatch.deliveries_wake(share=why.share)
