"""Webhook writes: callback URL checks, signing secrets, the event outbox and delivery attempts.

An event is handed to `event_record` inside the transaction that changed its subject; its
body bytes and a pending Delivery are written there, and the first attempt is published once
that transaction commits. An attempt claims its delivery first (a row lock taken with SKIP
LOCKED plus a lease), so no two workers send the same delivery at once, and only the claim's
holder records the outcome, so a success is never recorded twice. Every later attempt's time
is kept on the row: short delays ride on a countdown, the rest wait for the dispatcher.
"""
from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from core import http
from core.db import delete_in_batches
from core.errors import ApplicationError, Conflict
from webhooks import selectors, signing, tasks
from webhooks.models import Delivery, DeliveryAttempt, Event, SigningSecret
from webhooks.retries import retry_after_seconds, retry_delay_seconds

logger = logging.getLogger(__name__)

State = Delivery.State

# Delays up to this long are published as a countdown message; longer ones wait on the row
# for the dispatcher (a long-held ETA message is redelivered by Redis after its visibility
# timeout and gets a RabbitMQ consumer dropped).
COUNTDOWN_MAX_SECONDS = 60
# A published attempt that has not run after this long is published again (its message was
# lost, or its worker died); a duplicate is harmless because the attempt must claim the row.
REDISPATCH_AFTER_SECONDS = 600
# A countdown message can run this much before the row's due time when the publishing and the
# consuming hosts' clocks differ; without the slack it would be skipped and wait for redispatch.
CLOCK_SKEW_SECONDS = 2


def claim_lease_seconds() -> float:
    """How long a claim lasts: longer than an attempt can take (connect + read + body)."""
    return settings.WEBHOOK_TIMEOUT_SECONDS * 2 + 60


# --- Callback URLs ---------------------------------------------------------------------------


def callback_url_validate(*, url: str, resolver: http.Resolver | None = None) -> None:
    """Refuse (400) a callback URL that is malformed or reaches a non-public address."""
    try:
        http.url_check(url, resolver=resolver)
    except http.UrlRefused as exc:
        raise ApplicationError(
            f"callback_url is not allowed: {exc.reason}",
            code="invalid_callback_url",
            details={"callback_url": [exc.reason]},
        ) from None


# --- Signing secrets -------------------------------------------------------------------------


def signing_secret_get_or_create(*, owner_id: uuid.UUID) -> str:
    """The client's current secret, made on first use."""
    current = selectors.signing_secret_current(owner_id=owner_id)
    if current is not None:
        return current
    try:
        with transaction.atomic():
            return SigningSecret.objects.create(
                owner_id=owner_id, secret=signing.secret_generate()
            ).secret
    except IntegrityError:  # a concurrent first use made it: one current secret per client
        current = selectors.signing_secret_current(owner_id=owner_id)
        assert current is not None
        return current


def signing_secret_rotate(*, owner_id: uuid.UUID) -> str:
    """Make a new current secret; the old one keeps signing for WEBHOOK_SECRET_OVERLAP_SECONDS."""
    now = timezone.now()
    with transaction.atomic():
        # Locking the current row serialises concurrent rotations of one client.
        old = list(
            SigningSecret.objects.select_for_update().filter(owner_id=owner_id, expires_at__isnull=True)
        )
        SigningSecret.objects.filter(pk__in=[secret.pk for secret in old]).update(
            expires_at=now + timedelta(seconds=settings.WEBHOOK_SECRET_OVERLAP_SECONDS)
        )
        new = SigningSecret.objects.create(owner_id=owner_id, secret=signing.secret_generate())
    return new.secret


# --- Recording events ------------------------------------------------------------------------


def event_body(*, event_type: str, data: Any, at: datetime) -> bytes:
    """The exact bytes signed and sent: `{"type", "timestamp", "data"}` as compact UTF-8 JSON."""
    document = {
        "type": event_type,
        "timestamp": at.isoformat().replace("+00:00", "Z"),
        "data": data,
    }
    return json.dumps(
        document, cls=DjangoJSONEncoder, separators=(",", ":"), ensure_ascii=False
    ).encode("utf-8")


def event_record(
    *,
    owner_id: uuid.UUID,
    subject_id: uuid.UUID,
    event_type: str,
    data: Any,
    callback_url: str,
    publish: bool = True,
) -> Event:
    """Store the event's bytes and a pending delivery in the caller's transaction; publish the
    first attempt once it commits (the dispatcher publishes it if that fails).

    publish=False: the caller's Celery chain ends with `deliveries_send_for_subject`, which
    sends it; should that tail never run (a lost worker), the dispatcher takes the delivery
    over like any dispatched delivery that was never attempted.
    """
    now = timezone.now()
    event = Event.objects.create(
        owner_id=owner_id,
        subject_id=subject_id,
        event_type=event_type,
        body=event_body(event_type=event_type, data=data, at=now),
        created_at=now,
    )
    delivery = Delivery.objects.create(
        event=event,
        owner_id=owner_id,
        subject_id=subject_id,
        url=callback_url,
        next_attempt_at=now,
        dispatched_at=now,
        created_at=now,
    )
    if publish:
        transaction.on_commit(lambda: delivery_publish_or_release(delivery_id=delivery.pk))
    return event


def delivery_redeliver(
    *, owner_id: uuid.UUID, subject_id: uuid.UUID, event_types: Sequence[str]
) -> Delivery:
    """Send the subject's latest event of `event_types` again: same bytes, same webhook-id."""
    event = (
        Event.objects.filter(owner_id=owner_id, subject_id=subject_id, event_type__in=event_types)
        .order_by("-created_at", "-pk")
        .first()
    )
    if event is None:
        raise Conflict(
            "There is no final event to redeliver: the job has not finished, or it has no "
            "callback_url, or its webhook_events leave the final event out.",
            code="nothing_to_redeliver",
        )
    original = event.deliveries.order_by("created_at", "pk").first()
    now = timezone.now()
    with transaction.atomic():
        # Locking the event serialises redeliveries of it: repeated clicks make one, not many.
        Event.objects.select_for_update().filter(pk=event.pk).first()
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
            url=original.url if original else "",
            redelivery=True,
            next_attempt_at=now,
            dispatched_at=now,
            created_at=now,
        )
        transaction.on_commit(lambda: delivery_publish_or_release(delivery_id=delivery.pk))
    return delivery


# --- Publishing ------------------------------------------------------------------------------


def delivery_publish_or_release(*, delivery_id: int, countdown: float | None = None) -> bool:
    """Publish an attempt; if the broker is down, leave it to the dispatcher."""
    try:
        tasks.delivery_attempt_publish(delivery_id=delivery_id, countdown=countdown)
    except Exception:  # the broker's client raises many types; every one means "not published"
        logger.warning("Could not publish delivery %s; the dispatcher will", delivery_id, exc_info=True)
        Delivery.objects.filter(pk=delivery_id, state=State.PENDING).update(dispatched_at=None)
        return False
    return True


def deliveries_dispatch_due(*, limit: int = 500) -> int:
    """The dispatcher (periodic): publish attempts that are due and that no task is carrying."""
    now = timezone.now()
    with transaction.atomic():
        due = list(
            Delivery.objects.select_for_update(skip_locked=True)
            .filter(state=State.PENDING, next_attempt_at__lte=now)
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
    published = 0
    for delivery_id in due:
        if not delivery_publish_or_release(delivery_id=delivery_id):
            Delivery.objects.filter(pk__in=due[due.index(delivery_id) + 1 :]).update(dispatched_at=None)
            break
        published += 1
    return published


# --- Attempts --------------------------------------------------------------------------------


def _claim(*, delivery_id: int) -> tuple[Delivery, DeliveryAttempt] | None:
    """Claim a due, unclaimed delivery and open its next attempt; None if not ours to send."""
    now = timezone.now()
    with transaction.atomic():
        delivery = (
            # of=self: lock the delivery, not the event row joined for its body.
            Delivery.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("event")
            .filter(pk=delivery_id, state=State.PENDING)
            .filter(next_attempt_at__lte=now + timedelta(seconds=CLOCK_SKEW_SECONDS))
            .filter(Q(claimed_until__isnull=True) | Q(claimed_until__lt=now))
            .first()
        )
        if delivery is None:
            return None  # sent already, not due yet, or another worker is sending it
        # An attempt left open by a worker that died mid-attempt (its claim expired).
        DeliveryAttempt.objects.filter(delivery=delivery, finished_at__isnull=True).update(
            finished_at=now, error="Interrupted: the worker sending this attempt stopped."
        )
        delivery.attempt_count = F("attempt_count") + 1
        delivery.claim_token = uuid.uuid4()
        delivery.claimed_until = now + timedelta(seconds=claim_lease_seconds())
        delivery.save(update_fields=["attempt_count", "claim_token", "claimed_until"])
        delivery.refresh_from_db(fields=["attempt_count"])
        attempt = DeliveryAttempt.objects.create(
            delivery=delivery, number=delivery.attempt_count, started_at=now
        )
    return delivery, attempt


def _next_attempt_delay(*, result: http.HttpResult, attempts_made: int, now: datetime) -> float | None:
    """Seconds until the next attempt, or None when the delivery is over (success or not)."""
    if result.ok or result.status_code == 410:
        return None  # delivered; or Gone: the receiver asked us to stop
    delay = retry_delay_seconds(attempts_made=attempts_made, schedule=settings.WEBHOOK_RETRY_SCHEDULE)
    if delay is not None and result.status_code in (429, 503):
        retry_after = retry_after_seconds(
            result.headers.get("Retry-After"),
            now=now,
            max_seconds=settings.WEBHOOK_RETRY_AFTER_MAX_SECONDS,
        )
        if retry_after is not None:
            delay = retry_after
    return delay


def _text(prefix: bytes) -> str:
    # PostgreSQL text cannot hold NUL; a receiver's body is shown, not trusted.
    return prefix.decode("utf-8", errors="replace").replace("\x00", "\ufffd")


def delivery_attempt(*, delivery_id: int, resolver: http.Resolver | None = None) -> DeliveryAttempt | None:
    """Send one attempt of a delivery if it is due and unclaimed; record it and plan the next."""
    claimed = _claim(delivery_id=delivery_id)
    if claimed is None:
        return None
    delivery, attempt = claimed
    event = delivery.event
    body = bytes(event.body)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "jobapi-webhooks/1",
        **signing.headers_sign(
            secrets_in_use=selectors.signing_secrets_in_use(owner_id=delivery.owner_id)
            or [signing_secret_get_or_create(owner_id=delivery.owner_id)],
            message_id=event.message_id,
            timestamp=int(time.time()),  # fresh on every attempt
            body=body,
        ),
    }
    result = http.post(
        delivery.url,
        body=body,
        headers=headers,
        timeout_seconds=settings.WEBHOOK_TIMEOUT_SECONDS,
        resolver=resolver,
    )
    now = timezone.now()
    delay = _next_attempt_delay(result=result, attempts_made=attempt.number, now=now)
    countdown = delay is not None and delay <= COUNTDOWN_MAX_SECONDS
    if result.ok:
        state = State.SUCCEEDED
    elif delay is None:
        state = State.FAILED
    else:
        state = State.PENDING
    with transaction.atomic():
        DeliveryAttempt.objects.filter(pk=attempt.pk).update(
            finished_at=now,
            duration_ms=result.duration_ms,
            status_code=result.status_code,
            response_body=_text(result.body_prefix),
            error=result.error,
        )
        # Only the claim's holder moves the delivery on; if the claim expired and another
        # worker took over, this attempt is logged but decides nothing.
        owned = Delivery.objects.filter(pk=delivery.pk, claim_token=delivery.claim_token).update(
            state=state,
            next_attempt_at=None if delay is None else now + timedelta(seconds=delay),
            dispatched_at=now if countdown else None,
            claim_token=None,
            claimed_until=None,
            finished_at=None if state == State.PENDING else now,
        )
        if owned and countdown:
            transaction.on_commit(
                lambda: delivery_publish_or_release(delivery_id=delivery.pk, countdown=delay)
            )
    if not owned:
        logger.warning("Delivery %s attempt %s finished after its claim expired", delivery.pk, attempt.number)
    attempt.refresh_from_db()
    return attempt


def deliveries_send_for_subject(*, subject_id: uuid.UUID) -> int:
    """Send every due delivery of a subject now (the tail of a job's chain); how many were sent."""
    sent = 0
    for delivery_id in selectors.delivery_ids_due(subject_id=subject_id, now=timezone.now()):
        sent += delivery_attempt(delivery_id=delivery_id) is not None
    return sent


# --- Housekeeping (pruning) ------------------------------------------------------------------


def events_prune(*, older_than: datetime, batch_size: int = 1000, max_batches: int = 100) -> int:
    """Delete events older than `older_than` whose deliveries are all final, with their
    deliveries and attempt log (the database cascades). Returns how many events went.

    Batched so one run never holds locks on a big slice of the table; what a run leaves is
    taken by the next one.
    """
    prunable = Event.objects.filter(created_at__lt=older_than).exclude(
        deliveries__state=State.PENDING
    )
    # Each batch re-checks the condition: a redelivery may have added a pending delivery.
    return delete_in_batches(prunable, batch_size=batch_size, max_batches=max_batches)
