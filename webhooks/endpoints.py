"""Registered webhook endpoints: made once by a client, each with its subscriptions, signing
secret, custom headers and pace; disabled when they keep failing, enabled again by their client,
and their failed deliveries recovered."""
from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from core.db import statements_unbounded
from core.errors import ApplicationError, Conflict, NotFound
from core.services import client_lock
from core.timestamps import utc_iso
from webhooks import dispatch, outbox, reschedule, secrets, sending, shapes, sql, telemetry
from webhooks.addresses import callback_url_validate
from webhooks.events import (
    DEFAULT_ENDPOINT_EVENT_TYPES,
    ENDPOINT_DISABLED_EVENT_TYPE,
    TEST_EVENT_TYPE,
)
from webhooks.models import Delivery, Endpoint, Event

State = Delivery.State
# The fields a client sets; the rest is the service's.
EDITABLE = ("url", "description", "event_types", "enabled", "headers", "rate_limit_per_second")
# The most deliveries one recovery sends (`endpoint_recover`); the next one sends the next.
RECOVER_MAX_DELIVERIES = 1000
# The 404 of an endpoint not the asker's, or gone.
NO_ENDPOINT = "No such webhook endpoint."


def endpoint_get(*, owner_id: uuid.UUID, endpoint_id: uuid.UUID | str) -> Endpoint:
    """The owner's endpoint; another owner's id and a malformed id both answer 404."""
    try:
        return Endpoint.objects.get(pk=endpoint_id, owner_id=owner_id)
    except (Endpoint.DoesNotExist, ValidationError, ValueError, TypeError):
        raise NotFound(NO_ENDPOINT) from None


def _locked(endpoint_id: uuid.UUID) -> Endpoint:
    """The endpoint, its row locked until the transaction ends as one that keeps its key (FOR NO
    KEY UPDATE): a change of it waits for another, and its deletion for it, but an event being
    recorded for it, which holds it FOR KEY SHARE (webhooks/sql.py), does not wait. Locked FOR
    UPDATE, every event of its client waited for the change to commit (a recover's whole
    transaction), behind the one its owner's event lock let through (jobs/event_log.py). 404 if
    it was deleted since it was read (its client's other request, the admin's), as a moment
    later: it was a 500."""
    try:
        return Endpoint.objects.select_for_update(no_key=True).get(pk=endpoint_id)
    except Endpoint.DoesNotExist:
        raise NotFound(NO_ENDPOINT) from None


def _owner_hold(owner_id: uuid.UUID) -> None:
    """Hold the client's row first (webhooks/sql.py owner_hold), as its deletion takes it before
    its endpoints and deliveries: a client's request that holds its endpoint (a delete, a test,
    a recover) and then writes it twice or adds rows for the client waited at commit for a
    deletion that waited for the endpoint, and PostgreSQL aborted one of them. 404 once the
    client is gone."""
    if not sql.owner_hold(owner_id):
        raise NotFound(NO_ENDPOINT)


def _url_validate(url: str, owner_id: uuid.UUID) -> None:
    try:
        callback_url_validate(url=url, key=owner_id)
    except ApplicationError as exc:
        if exc.code != "invalid_callback_url":
            raise  # not the URL's fault: too many of the client's lookups waiting (429)
        raise ApplicationError(exc.message.replace("callback_url", "url"), code="invalid_url",
                               details={"url": exc.details["callback_url"]}) from None


def endpoint_create(*, owner_id: uuid.UUID, url: str, event_types: Sequence[str] | None = None,
                    description: str = "", enabled: bool = True, headers: dict[str, str] | None = None,
                    rate_limit_per_second: float | None = None) -> Endpoint:
    """Register an endpoint (its URL passes the callback URL rules) with its own secret; 409
    when the client has WEBHOOK_MAX_ENDPOINTS_PER_CLIENT already."""
    _url_validate(url, owner_id)
    with transaction.atomic():
        # Counting under the client's lock: two creations cannot both pass. (Locking its
        # endpoints' rows would not do: Django counts a locked queryset with a plain COUNT.)
        client_lock(client_id=owner_id)
        count = Endpoint.objects.filter(owner_id=owner_id).count()
        if count >= settings.WEBHOOK_MAX_ENDPOINTS_PER_CLIENT:
            raise Conflict(
                f"You have {count} webhook endpoints, the most a client may have; delete one first.",
                code="too_many_endpoints",
                details={"max_endpoints": settings.WEBHOOK_MAX_ENDPOINTS_PER_CLIENT},
            )
        endpoint = Endpoint.objects.create(
            owner_id=owner_id, url=url, description=description, enabled=enabled,
            event_types=sorted(set(event_types or DEFAULT_ENDPOINT_EVENT_TYPES)), headers=headers or {},
            rate_limit_per_second=rate_limit_per_second,
            disabled_reason="" if enabled else Endpoint.DisabledReason.CLIENT,
            disabled_at=None if enabled else timezone.now(),
        )
        secrets.signing_secret_sealed_get_or_create(owner_id=owner_id, endpoint_id=endpoint.id)
    _forget(owner_id)
    return endpoint


def endpoint_update(*, owner_id: uuid.UUID, endpoint_id: uuid.UUID | str, **changes: Any) -> Endpoint:
    """Change what the client may change. Disabling holds the endpoint's pending deliveries
    (state endpoint_disabled); enabling sends them again; a new pace applies to those waiting,
    which go at it (webhooks/reschedule.py: in batches, after this request). A new URL needs no
    write of them: each attempt goes to the endpoint's URL as it is when the attempt is claimed."""
    if "url" in changes:
        _url_validate(changes["url"], owner_id)
    with transaction.atomic():
        endpoint = _locked(endpoint_get(owner_id=owner_id, endpoint_id=endpoint_id).pk)
        was_enabled, was_rate = endpoint.enabled, endpoint.rate_limit_per_second
        for name in EDITABLE:
            if name in changes:
                setattr(endpoint, name, sorted(set(changes[name])) if name == "event_types" else changes[name])
        if endpoint.enabled and not was_enabled:
            endpoint.disabled_reason, endpoint.disabled_at = "", None
            endpoint.consecutive_failures, endpoint.failing_since = 0, None
        elif was_enabled and not endpoint.enabled:
            endpoint.disabled_reason, endpoint.disabled_at = Endpoint.DisabledReason.CLIENT, timezone.now()
        if endpoint.rate_limit_per_second != was_rate:  # the turn last taken at the old pace ends
            transaction.on_commit(lambda: sending.endpoint_pace_reset(endpoint_id=endpoint.pk))
        if endpoint.enabled != was_enabled or endpoint.rate_limit_per_second != was_rate:
            # The waiting deliveries take the endpoint's slots again from now, at its pace.
            endpoint.next_slot_at = None
            reschedule.endpoint_reschedule_on_commit(endpoint=endpoint)
        endpoint.save()
    _forget(owner_id)
    return endpoint


def endpoint_delete(*, owner_id: uuid.UUID, endpoint_id: uuid.UUID | str) -> None:
    """Delete the endpoint; its deliveries not yet delivered stop (state canceled), the log stays."""
    with transaction.atomic():
        # Its deliveries' log loses its endpoint (SET_NULL), one statement of as many rows as it has.
        statements_unbounded()
        _owner_hold(owner_id)
        endpoint_pk = endpoint_get(owner_id=owner_id, endpoint_id=endpoint_id).pk
        # Its claimed deliveries first: a batch recording an attempt's outcome holds the delivery,
        # then takes the endpoint (its health, webhooks/recording.py), so it is waited for before
        # the endpoint is taken. Taken after, a deletion between the two deadlocked with the
        # recording, and PostgreSQL aborted one a second later: the client's DELETE answered 500,
        # or the batch's claims ended and its receivers were sent it again.
        list(Delivery.objects.filter(endpoint_id=endpoint_pk, claim_token__isnull=False)
             .select_for_update().values_list("pk", flat=True))
        # Locked before its deliveries are cancelled: an event being recorded for it (which holds
        # it, webhooks/sql.py) commits first and has its delivery cancelled too, or waits and
        # makes none. Unlocked, one committed between the cancel and the delete was left pending
        # without its endpoint (SET_NULL), to go to its URL signed with the client's secret.
        endpoint = Endpoint.objects.select_for_update().get(pk=endpoint_pk)
        # An attempt in flight keeps its claim: its holder records a 2xx as succeeded (the
        # receiver got it), and anything else leaves the delivery canceled (webhooks/recording.py).
        Delivery.objects.filter(endpoint=endpoint, state__in=[State.PENDING, State.ENDPOINT_DISABLED]).update(
            state=State.CANCELED, next_attempt_at=None, finished_at=timezone.now(),
        )
        endpoint.delete()
    _forget(owner_id)


def endpoint_test(*, owner_id: uuid.UUID, endpoint_id: uuid.UUID | str) -> Delivery:
    """Send a `webhook.test` event to the endpoint now, enabled or not (its delivery is never
    held: webhooks/sql.py HELD_WHILE_DISABLED); its delivery."""
    endpoint = endpoint_get(owner_id=owner_id, endpoint_id=endpoint_id)
    with transaction.atomic():
        _owner_hold(owner_id)
        event = outbox.event_record(
            owner_id=owner_id, subject_id=endpoint.id, event_type=TEST_EVENT_TYPE,
            data={"endpoint_id": str(endpoint.id), "message": "A test event, sent on request."},
            callback_url="", endpoints=[endpoint],
        )
    delivery = Delivery.objects.filter(event=event).first()
    if delivery is None:  # deleted meanwhile: the event went to no endpoint
        raise NotFound(NO_ENDPOINT)
    return delivery


def endpoint_recover(*, owner_id: uuid.UUID, endpoint_id: uuid.UUID | str, since: datetime) -> int:
    """Send again, once, every event whose delivery to the endpoint failed for good since `since`
    (a new delivery of the same event: same webhook-id, a fresh retry schedule) and that has no
    delivery to it under way, held or delivered since; and send the deliveries held while it was
    disabled (as they are). How many go: RECOVER_MAX_DELIVERIES at most, the newest failures
    first; the next call sends the next ones (those sent are under way, so none goes twice)."""
    endpoint = endpoint_get(owner_id=owner_id, endpoint_id=endpoint_id)
    now = timezone.now()
    with transaction.atomic():
        _owner_hold(owner_id)
        # Locking the endpoint serialises recoveries of it: a repeated click finds the first's
        # deliveries under way and makes none.
        endpoint = _locked(endpoint.pk)
        # Another delivery of the event to the endpoint (a recovery's, or a success) settles it:
        # only an event whose every delivery there failed goes again, and once.
        settled = Delivery.objects.filter(
            endpoint=endpoint, event=OuterRef("event"),
            state__in=[State.PENDING, State.SUCCEEDED, State.ENDPOINT_DISABLED],
        )
        failed: dict[int, uuid.UUID] = {}  # event -> its subject, of each event's latest failed delivery
        # Read as they come, and only until the bound (ids, never the events' bodies): all of
        # them read at once, with their events, a recovery of 200,000 failures took 31 s and
        # 1.6 GiB of the API process, in its turn.
        for event_id, subject_id in (
            Delivery.objects.filter(endpoint=endpoint, state=State.FAILED, created_at__gte=since)
            .exclude(Exists(settled)).order_by("-created_at", "-pk").values_list("event_id", "subject_id")
            .iterator(chunk_size=RECOVER_MAX_DELIVERIES)
        ):
            failed.setdefault(event_id, subject_id)
            if len(failed) == RECOVER_MAX_DELIVERIES:
                break
        kept = _kept_from_the_prune(failed)
        again = Delivery.objects.bulk_create([
            Delivery(event_id=event_id, owner_id=owner_id, subject_id=subject_id, event_type=event_type,
                     endpoint=endpoint, url=endpoint.url, redelivery=True, next_attempt_at=now, dispatched_at=now,
                     created_at=now)
            for event_id, (subject_id, event_type) in kept.items()
        ])
        held: list[int] = []
        if endpoint.enabled:
            held = list(Delivery.objects.filter(endpoint=endpoint, state=State.ENDPOINT_DISABLED, created_at__gte=since)
                        .order_by("-created_at", "-pk").values_list("pk", flat=True)[:RECOVER_MAX_DELIVERIES - len(kept)])
            Delivery.objects.filter(pk__in=held).update(state=State.PENDING, next_attempt_at=now, dispatched_at=now)
            dispatch.deliveries_publish_on_commit(delivery_ids=[*held, *(d.pk for d in again)])
        else:
            # They wait for the endpoint to be enabled, like its others; the held ones stay as
            # they were, so are not counted: counted, a client calling again while the answer
            # was the bound (as docs/webhooks.md says to) never stopped once that many were held.
            Delivery.objects.filter(pk__in=[d.pk for d in again]).update(state=State.ENDPOINT_DISABLED, dispatched_at=None)
    return len(kept) + len(held)


def _kept_from_the_prune(failed: dict[int, uuid.UUID]) -> dict[int, tuple[uuid.UUID, str]]:
    """Those of the events still there, with their subject and type, each locked until the
    transaction ends (FOR NO KEY UPDATE: the prune skips an event locked, and a delivery of it
    added meanwhile is seen at its next run). Unlocked, the prune deleted an event read here
    before its new delivery committed, which then failed on its foreign key (the client's 500)."""
    kept = dict(Event.objects.filter(pk__in=failed).order_by("pk").select_for_update(no_key=True)
                .values_list("pk", "event_type"))
    return {event_id: (subject_id, kept[event_id]) for event_id, subject_id in failed.items() if event_id in kept}


def endpoint_disable_failing(*, endpoint_id: uuid.UUID, reason: str) -> None:
    """Disable an endpoint whose every attempt failed for too long (see the health rule in
    webhooks/health.py), hold its pending deliveries (in batches, after the caller's transaction,
    as when its client disables it: webhooks/reschedule.py), and tell the owner's other endpoints
    that subscribe to `endpoint.disabled`, and the operators (a line and a counter) once the
    caller's transaction commits."""
    with transaction.atomic():
        endpoint = Endpoint.objects.select_for_update(no_key=True).filter(pk=endpoint_id, enabled=True).first()
        # Nor while its client is being deleted (its endpoints go with it). The caller's
        # transaction (an attempt's outcome being recorded) holds the attempt, its delivery and
        # the endpoint, which the deletion, holding the client, goes on to delete; and what this
        # writes (the endpoint's row a second time, the event) waits at commit for the client:
        # a deadlock, whose victim was the operator's deletion as often as not.
        if endpoint is None or not sql.owner_hold(endpoint.owner_id, unless_deleting=True):
            return
        endpoint.enabled, endpoint.disabled_reason = False, Endpoint.DisabledReason.FAILING
        endpoint.disabled_at, endpoint.next_slot_at = timezone.now(), None
        # Not held here: one UPDATE of a large backlog held the attempts' transaction that
        # disabled it (a claim holds any that falls due meanwhile).
        reschedule.endpoint_reschedule_on_commit(endpoint=endpoint)
        endpoint.save(update_fields=["enabled", "disabled_reason", "disabled_at", "next_slot_at",
                                     "schedule_version", "rescheduling_since"])
        transaction.on_commit(lambda: telemetry.endpoint_disabled(endpoint=endpoint, detail=reason))
        others = subscribers(owner_id=endpoint.owner_id, event_type=ENDPOINT_DISABLED_EVENT_TYPE)
        if others:
            outbox.event_record(
                owner_id=endpoint.owner_id, subject_id=endpoint.id, event_type=ENDPOINT_DISABLED_EVENT_TYPE,
                data={**endpoint_data(endpoint), "reason": reason}, callback_url="", endpoints=others,
            )


def subscribers(*, owner_id: uuid.UUID, event_type: str) -> list[Endpoint]:
    """The owner's enabled endpoints that subscribe to `event_type` (a client has at most a few)."""
    return [
        endpoint for endpoint in Endpoint.objects.filter(owner_id=owner_id, enabled=True)
        if event_type in shapes.event_types_shown(endpoint.event_types)
    ]


# Per process: owner -> (when read, monotonic seconds; {event type: its subscribed endpoints'
# ids}). Every job event asks; most owners have no endpoint, and a read per event would add a
# round trip to each transition. A change is seen at once by the process that made it and
# within WEBHOOK_ENDPOINT_CACHE_SECONDS by the others.
_subscriptions: dict[uuid.UUID, tuple[float, dict[str, list[uuid.UUID]]]] = {}


def subscribers_cached(*, owner_id: uuid.UUID, event_type: str) -> list[Endpoint]:
    """`subscribers`, its answer "none" (the usual one) remembered for a few seconds."""
    ids = _subscriptions_cached(owner_id).get(event_type)
    return list(Endpoint.objects.filter(pk__in=ids, enabled=True)) if ids else []


def has_endpoints_cached(*, owner_id: uuid.UUID) -> bool:
    """Whether the owner has an enabled endpoint subscribed to anything, as remembered for a few
    seconds: most owners have none, and a submission asks this of each."""
    return bool(_subscriptions_cached(owner_id))


def _subscriptions_cached(owner_id: uuid.UUID) -> dict[str, list[uuid.UUID]]:
    now = time.monotonic()
    hit = _subscriptions.get(owner_id)
    if hit is None or now - hit[0] >= settings.WEBHOOK_ENDPOINT_CACHE_SECONDS:
        by_type: dict[str, list[uuid.UUID]] = {}
        for endpoint_id, event_types in Endpoint.objects.filter(owner_id=owner_id, enabled=True).values_list(
            "id", "event_types"
        ):
            for subscribed in shapes.event_types_shown(event_types):
                by_type.setdefault(subscribed, []).append(endpoint_id)
        while len(_subscriptions) >= _SUBSCRIPTIONS_MAX_OWNERS:
            _subscriptions.pop(next(iter(_subscriptions)), None)
        hit = _subscriptions[owner_id] = (now, by_type)
    return hit[1]


_SUBSCRIPTIONS_MAX_OWNERS = 10_000


def _forget(owner_id: uuid.UUID) -> None:
    _subscriptions.pop(owner_id, None)


def _iso(moment: datetime | None) -> str | None:
    return utc_iso(moment) if moment else None


def endpoint_data(endpoint: Endpoint) -> dict[str, Any]:
    """The endpoint as events and the API show it, never with its secret."""
    return {
        "id": str(endpoint.id),
        "url": endpoint.url,
        "description": endpoint.description,
        "event_types": shapes.event_types_shown(endpoint.event_types),
        "enabled": endpoint.enabled,
        "disabled_reason": endpoint.disabled_reason or None,
        "disabled_at": _iso(endpoint.disabled_at),
        "created_at": _iso(endpoint.created_at),
    }
