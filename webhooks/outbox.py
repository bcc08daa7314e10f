"""The event outbox: an event's exact body bytes and its pending deliveries, written in the
transaction that changed the event's subject, redeliveries, and pruning old events.

webhooks knows nothing of what a subject is (a job's id, for jobs): it is handed an event.
"""
from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.db.models import Count, Exists, OuterRef, QuerySet
from django.utils import timezone

from core.db import delete_in_batches
from core.errors import Conflict
from core.timestamps import utc_iso
from webhooks import dispatch, sql
from webhooks.models import Delivery, DeliveryAttempt, Endpoint, Event

State = Delivery.State


def event_body(*, event_type: str, data: Any, at: datetime) -> bytes:
    """The exact bytes signed and sent: `{"type", "timestamp", "data"}` as compact UTF-8 JSON."""
    document = {
        "type": event_type,
        "timestamp": utc_iso(at),
        "data": data,
    }
    return json.dumps(document, cls=DjangoJSONEncoder, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def callback_authority(url: str) -> str:
    """What `Delivery.authority` holds for a delivery to the callback URL `url`."""
    return urlsplit(url).netloc.lower()


def endpoint_slots(*, endpoint_id: uuid.UUID, count: int, now: datetime) -> list[datetime]:
    """When the endpoint's next `count` deliveries may go under its rate limit, taking those
    slots (each `now` without a limit): its deliveries are spaced, never dropped. Locks the
    endpoint's row for the caller's transaction."""
    endpoints = Endpoint.objects.select_for_update().only("next_slot_at", "rate_limit_per_second")
    locked = endpoints.filter(pk=endpoint_id).first()
    if locked is None or not locked.rate_limit_per_second:
        return [now] * count
    every = timedelta(seconds=1 / locked.rate_limit_per_second)
    first = max(now, locked.next_slot_at or now)
    locked.next_slot_at = first + every * count
    locked.save(update_fields=["next_slot_at"])
    return [first + every * n for n in range(count)]


def event_record(
    *,
    owner_id: uuid.UUID,
    subject_id: uuid.UUID,
    event_type: str,
    data: Any = None,
    body: bytes | None = None,
    callback_url: str = "",
    endpoints: Sequence[Endpoint] = (),
    publish: bool = True,
    replaces_earlier: bool = False,
) -> Event:
    """Store the event's bytes and a pending delivery to each of its receivers (the subject's
    `callback_url`, and `endpoints`) in the caller's transaction; publish the first attempts
    once it commits (the dispatcher publishes them if that fails). Every delivery of the event
    carries its one webhook-id. An endpoint with a rate limit gets its delivery at its next slot.
    `body`: the event's bytes when the caller has rendered them already (`event_body`), else
    they are rendered from `data`.

    publish=False: the caller's Celery chain ends with `deliveries_send_for_subject`, which
    sends them; should that tail never run (a lost worker), the dispatcher takes the deliveries
    over like any dispatched delivery that was never attempted.

    replaces_earlier: the event is a snapshot (a job's progress) whose latest one is all that
    matters: the subject's earlier events of its type go, with their deliveries and attempts
    (`events_superseded_delete`).
    """
    now = timezone.now()
    event = Event(
        owner_id=owner_id,
        subject_id=subject_id,
        event_type=event_type,
        body=body if body is not None else event_body(event_type=event_type, data=data, at=now),
        created_at=now,
    )
    deliveries = [
        Delivery(owner_id=owner_id, subject_id=subject_id, event_type=event_type, url=callback_url,
                 authority=callback_authority(callback_url), next_attempt_at=now, dispatched_at=now, created_at=now)
    ] if callback_url else []
    for endpoint in endpoints:
        due = endpoint_slots(endpoint_id=endpoint.pk, count=1, now=now)[0] if endpoint.rate_limit_per_second else now
        deliveries.append(Delivery(
            owner_id=owner_id, subject_id=subject_id, event_type=event_type, endpoint=endpoint, url=endpoint.url,
            next_attempt_at=due,
            dispatched_at=now if due <= now or due - now <= timedelta(seconds=dispatch.COUNTDOWN_MAX_SECONDS) else None,
            created_at=now,
        ))
    # One to an endpoint deleted since its subscribers were read is not written.
    deliveries = sql.event_insert_with_deliveries(event, deliveries)
    if replaces_earlier:
        events_superseded_delete(subject_id=subject_id, event_type=event_type, before_id=event.pk,
                                 replacing=deliveries, now=now)
    due_now = [d.pk for d in deliveries if d.next_attempt_at <= now]
    if publish and due_now:
        dispatch.deliveries_publish_on_commit(delivery_ids=due_now)
    for delivery in deliveries:  # paced: each at its slot (later ones wait for the dispatcher)
        if delivery.next_attempt_at > now and delivery.dispatched_at is not None:
            dispatch.deliveries_publish_on_commit(
                delivery_ids=[delivery.pk], countdown=(delivery.next_attempt_at - now).total_seconds()
            )
    return event


def events_superseded_delete(*, subject_id: uuid.UUID, event_type: str, before_id: int,
                             replacing: Sequence[Delivery] = (), now: datetime | None = None) -> int:
    """Delete the subject's events of `event_type` recorded before event `before_id`, with their
    deliveries and attempts, in the caller's transaction; how many events went. A job's progress
    event carries the whole job (up to ~18 KB at its caps) and a `long_running_task` reports one
    a second: kept, an hour's job recorded 3,600 events, their deliveries and attempts for
    WEBHOOK_EVENT_RETENTION_DAYS, counted in no quota. A pending delivery of one is superseded:
    its receiver gets the latest progress, not a backlog of stale ones after an outage.

    An event with a delivery in flight (claimed: a worker is sending it, or its claim expired
    and the next drain takes it over) stays, for the next progress event or the prune: a row is
    never pulled from under a worker. Each event is locked SKIP LOCKED first, as the prune locks
    them (a redelivery or an endpoint's recovery adds a delivery under its event's lock), then
    its deliveries SKIP LOCKED (a claim locks a delivery before setting its claim); an event any
    of whose deliveries was not locked, or is claimed once locked, stays. Usually one event of
    one or two deliveries, read through `event_subject` and the deliveries' event index.

    `replacing`: the new event's deliveries, written in this transaction; one to a paced
    endpoint takes the place in its line of the one it replaces that was still waiting for its
    first slot (`_slots_hand_over`)."""
    events = list(
        Event.objects.filter(subject_id=subject_id, event_type=event_type, pk__lt=before_id)
        .select_for_update(skip_locked=True).values_list("pk", flat=True)
    )
    if not events:
        return 0
    locked = (
        Delivery.objects.filter(event_id__in=events).select_for_update(skip_locked=True)
        .values_list("pk", "event_id", "claim_token", "endpoint_id", "state", "attempt_count", "next_attempt_at")
    )
    kept, free, unsent = set(), [], []
    for delivery_id, event_id, claim_token, endpoint_id, state, attempt_count, next_attempt_at in locked:
        if claim_token is None:
            free.append((delivery_id, event_id))
            if endpoint_id is not None and state == State.PENDING and attempt_count == 0:
                unsent.append((event_id, endpoint_id, next_attempt_at))
        else:
            kept.add(event_id)
    # One a claim held locked was skipped: its event keeps it, so stays.
    kept |= _held_elsewhere(Delivery.objects.filter(event_id__in=events), "event_id",
                            locked=[event_id for _, event_id, *_ in locked])
    # And one of whose attempts another transaction holds: those that hold an attempt before its
    # delivery (a recording, a client's batched deletion: core/services.py) then wait for the
    # delivery held here, and deleting the attempt this waited for them in turn, a deadlock
    # PostgreSQL ended a second later by failing one (the job's transition, or the deletion's
    # batch). None is added meanwhile: an attempt is opened under its delivery's lock (the claim).
    event_of = {delivery_id: event_id for delivery_id, event_id in free if event_id not in kept}
    attempts = DeliveryAttempt.objects.filter(delivery_id__in=list(event_of))
    held = _held_elsewhere(attempts, "delivery_id",
                           locked=attempts.select_for_update(skip_locked=True).values_list("delivery_id", flat=True))
    kept |= {event_of[delivery_id] for delivery_id in held}
    gone = [pk for pk in events if pk not in kept]
    if not gone:
        return 0
    slots: dict[uuid.UUID, datetime] = {}
    for event_id, endpoint_id, next_attempt_at in unsent:
        if event_id not in kept:
            slots[endpoint_id] = min(next_attempt_at, slots.get(endpoint_id, next_attempt_at))
    if slots:
        _slots_hand_over(replacing=replacing, slots=slots, now=now or timezone.now())
    # Their deliveries and attempts go by the cascade: every delivery of an event that goes is
    # locked here, and none is added without its event's lock. Only the keys are read: the
    # collector read each event's body (up to ~18 KB) to delete it.
    return Event.objects.filter(pk__in=gone).only("pk").delete()[1].get(Event._meta.label, 0)


def _held_elsewhere(rows: QuerySet[Any], key: str, *, locked: Iterable[Any]) -> set[Any]:
    """The values of `key` some of whose `rows` another transaction holds: `locked` lists the
    `key` of each row this one locked of them (SKIP LOCKED), and a value with fewer locked than
    it has rows lost one to another."""
    locked_by_key = Counter(locked)
    return {row[key] for row in rows.values(key).annotate(n=Count("pk")) if row["n"] != locked_by_key[row[key]]}


def _slots_hand_over(*, replacing: Sequence[Delivery], slots: dict[uuid.UUID, datetime], now: datetime) -> None:
    """Give each of `replacing` to a paced endpoint the earlier slot of the delivery it
    replaced (`slots`: endpoint id -> the earliest deleted one's), and its own slot back to its
    endpoint. Without this a replaced delivery kept the place it took in its endpoint's line: a
    job reporting progress every second to an endpoint paced at one delivery every ten took a
    slot a second, each new progress going ten seconds further away while the one before went,
    so the receiver heard no progress until the job had ended, its final event waiting behind
    the empty slots, and its client was refused `webhook_backlog_full` for deliveries that no
    longer existed. The endpoint's row is locked by `endpoint_slots` in this transaction, and
    the replacing delivery took its last slot, so that slot is where its next one starts again."""
    for delivery in replacing:
        earlier = slots.get(delivery.endpoint_id) if delivery.endpoint_id else None
        if earlier is None or earlier >= delivery.next_attempt_at:
            continue
        Endpoint.objects.filter(pk=delivery.endpoint_id, rate_limit_per_second__isnull=False).update(
            next_slot_at=delivery.next_attempt_at
        )
        delivery.next_attempt_at = earlier
        # As event_record dispatches a delivery at its slot: soon enough, on a countdown message.
        delivery.dispatched_at = (
            now if earlier - now <= timedelta(seconds=dispatch.COUNTDOWN_MAX_SECONDS) else None
        )
        Delivery.objects.filter(pk=delivery.pk).update(
            next_attempt_at=delivery.next_attempt_at, dispatched_at=delivery.dispatched_at
        )


def delivery_redeliver(
    *, owner_id: uuid.UUID, subject_id: uuid.UUID, event_types: Sequence[str], callback_url: str
) -> Delivery:
    """Send the subject's latest event of `event_types` again to its `callback_url`: same bytes,
    same webhook-id. Only an event that went there counts (a delivery to that URL without an
    endpoint): an endpoint's deliveries are sent again by its recover, with its secret, headers,
    pace and state, and a deleted endpoint's keep its URL but no endpoint (SET_NULL), so only
    the subject's callback_url tells them apart. None (""): nothing to redeliver."""
    sent_to_callback = Delivery.objects.filter(event=OuterRef("pk"), endpoint__isnull=True, url=callback_url)
    event = (
        Event.objects.filter(owner_id=owner_id, subject_id=subject_id, event_type__in=event_types)
        .filter(Exists(sent_to_callback))
        .order_by("-created_at", "-pk")
        .only("pk", "event_type")  # its body (the job's payload and result, up to a few MB) is sent by its id
        .first()
    ) if callback_url else None
    if event is None:
        raise _nothing_to_redeliver()
    now = timezone.now()
    with transaction.atomic():
        # Locking the event serialises redeliveries of it: repeated clicks make one, not many.
        # Gone by then: the prune deleted it since it was read (past its retention); a delivery
        # of it failed at commit on its foreign key, a 500.
        if not Event.objects.select_for_update().filter(pk=event.pk).exists():
            raise _nothing_to_redeliver()
        if Delivery.objects.filter(event=event, state=State.PENDING).exists():
            raise Conflict(
                "This event is still being delivered; redeliver once its delivery has ended "
                "(see the job's deliveries).",
                code="delivery_in_progress",
            )
        delivery = Delivery.objects.create(
            event=event,
            owner_id=owner_id,
            subject_id=subject_id,
            event_type=event.event_type,
            url=callback_url,
            authority=callback_authority(callback_url),
            redelivery=True,
            next_attempt_at=now,
            dispatched_at=now,
            created_at=now,
        )
        dispatch.deliveries_publish_on_commit(delivery_ids=[delivery.pk])
    return delivery


def _nothing_to_redeliver() -> Conflict:
    return Conflict(
        "There is no final event to redeliver: the job has not finished, or it has no "
        "callback_url, or its webhook_events leave the final event out, or the event is past "
        "WEBHOOK_EVENT_RETENTION_DAYS and was pruned.",
        code="nothing_to_redeliver",
    )


# Events one batch deletes, and batches one run deletes at most (read at each run).
PRUNE_BATCH_SIZE = 1000
PRUNE_MAX_BATCHES = 100


def events_prune(*, older_than: datetime, batch_size: int = PRUNE_BATCH_SIZE,
                 max_batches: int = PRUNE_MAX_BATCHES) -> int:
    """Delete events older than `older_than` whose deliveries are all final, with their
    deliveries and attempt log; how many events went. Each batch re-checks the condition (a
    redelivery may have added a pending delivery) and locks its events, skipping those a
    redelivery or an endpoint's recovery holds to send again (core.db.delete_in_batches). A delivery held
    for a disabled endpoint is not final: enabling the endpoint sends it (the endpoint's
    deletion cancels it), so its event stays; an endpoint holds only what was pending when it
    was disabled, since events recorded while it is disabled make no delivery to it.

    Oldest first, so that each batch walks `event_created` up to `older_than` and no further.
    Unordered, PostgreSQL 15 takes the first events in primary-key order whenever it expects
    many to be due (a merge anti-join with the deliveries' event index): cheap while they are,
    but when fewer are due than it expects (the end of a backlog, before ANALYZE), the batch
    that finds less than `batch_size` reads every event and the index of every delivery
    (docs/reliability.md, "Pruning at two million events")."""
    prunable = (
        Event.objects.filter(created_at__lt=older_than)
        .exclude(deliveries__state__in=[State.PENDING, State.ENDPOINT_DISABLED])
        .order_by("created_at")
    )
    return delete_in_batches(prunable, batch_size=batch_size, max_batches=max_batches, skip_locked=True)
