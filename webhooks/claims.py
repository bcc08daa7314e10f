"""Claiming deliveries before an attempt: a lease on the row, so no two workers send the same
delivery at once, and only the claim's holder records the outcome.

The claim takes the rows it can lock at once (SKIP LOCKED): a row another worker is claiming is
left to that worker. A delivery claimed again after its claim expired (its worker died
mid-attempt) has that attempt closed as interrupted.
"""
from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from webhooks import secrets, shapes, sql
from webhooks.dispatch import BATCH_MAX_DELIVERIES
from webhooks.models import Delivery, DeliveryAttempt

logger = logging.getLogger(__name__)

# The outcome of an attempt a claim opened for a delivery left out of its batch: its endpoint
# was deleted (the delivery canceled) before its first secret was made.
LEFT_OUT_ENDPOINT_DELETED = "Not sent: its endpoint was deleted before the attempt went out."

# A countdown message can run this much before the row's due time when the publishing and the
# consuming hosts' clocks differ; without the slack it would be skipped and wait for redispatch.
CLOCK_SKEW_SECONDS = 2


def claim_lease_seconds() -> float:
    """How long a claim lasts: longer than an attempt can take (connect + read + body)."""
    return settings.WEBHOOK_TIMEOUT_SECONDS * 2 + 60


@dataclass(frozen=True)
class Scope:
    """Which deliveries a claim may take: these ids, or a subject's (less those sent)."""

    delivery_ids: Sequence[int] | None = None
    subject_id: uuid.UUID | None = None
    sent: Sequence[int] = ()


@dataclass(frozen=True)
class Claimed:
    """A delivery this worker holds the claim on, with what it takes to send the attempt."""

    delivery_id: int
    owner_id: uuid.UUID  # whose delivery: its share of the receivers (webhooks/sending.py)
    url: str  # where the attempt goes: its endpoint's URL as claimed, or the callback_url
    endpoint_id: uuid.UUID | None  # None: the job's own callback_url
    headers: dict[str, str]  # the endpoint's custom headers
    attempt_id: int
    attempt_number: int
    started_at: datetime
    message_id: str
    body: bytes
    # Sealed as stored (webhooks/sealing.py), unsealed when signing; at least one: an owner's (or
    # endpoint's) first delivery makes its secret.
    secrets: list[str]
    rate_limit_per_second: float | None  # the endpoint's pace, kept when sending (webhooks/sending.py)


def claim(*, scope: Scope, token: uuid.UUID, limit: int = BATCH_MAX_DELIVERIES) -> list[Claimed]:
    """Claim up to `limit` deliveries in `scope` that are due and unclaimed, and open their next
    attempts."""
    now = timezone.now()
    due_by = now + timedelta(seconds=CLOCK_SKEW_SECONDS)
    claimed_until = now + timedelta(seconds=claim_lease_seconds())
    claim_rows = claim_postgresql if connection.vendor == "postgresql" else claim_portable
    rows = claim_rows(scope=scope, token=token, now=now, due_by=due_by, claimed_until=claimed_until, limit=limit)
    # Made once per owner (or endpoint) in the batch: its first deliveries all come without one.
    # Empty: the owner (or endpoint) was deleted since the claim, and its deliveries with it
    # (an endpoint's are canceled); they are left out, and the rest of the batch is sent.
    first_secrets: dict[tuple[uuid.UUID, uuid.UUID | None], list[str]] = {}
    claimed = []
    left_out: list[tuple[int, int]] = []
    for (delivery_id, url, owner_id, endpoint_id, headers, attempt_id, number, message_id, body,
         signing_secrets, rate_limit_per_second) in rows:
        if not signing_secrets:
            key = (owner_id, endpoint_id)
            if key not in first_secrets:
                try:
                    first_secrets[key] = [
                        secrets.signing_secret_sealed_get_or_create(owner_id=owner_id, endpoint_id=endpoint_id)
                    ]
                except secrets.SecretOwnerGone:
                    logger.info("Deliveries of client %s (endpoint %s) left out: deleted since claimed",
                                owner_id, endpoint_id)
                    first_secrets[key] = []
            signing_secrets = first_secrets[key]
            if not signing_secrets:
                left_out.append((delivery_id, attempt_id))
                continue
        claimed.append(Claimed(
            delivery_id=delivery_id, owner_id=owner_id, url=url, endpoint_id=endpoint_id, headers=headers,
            attempt_id=attempt_id, attempt_number=number, started_at=now, message_id=message_id, body=body,
            secrets=signing_secrets, rate_limit_per_second=rate_limit_per_second,
        ))
    if left_out:
        _left_out_close(left_out, token=token, now=now)
    return claimed


def _left_out_close(left_out: Sequence[tuple[int, int]], *, token: uuid.UUID, now: datetime) -> None:
    """Close what the claim opened for deliveries left out of the batch, (delivery id, attempt
    id) each: an endpoint's (a client's went with it) is canceled, and leaves its claim as one
    whose attempt failed does when the endpoint is deleted in flight (webhooks/recording.py); its
    attempt, never sent, ends with the reason. Left open, the delivery log showed it in flight
    for ever beside the canceled delivery."""
    with transaction.atomic():
        DeliveryAttempt.objects.filter(pk__in=[attempt for _, attempt in left_out], finished_at__isnull=True).update(
            finished_at=now, error=LEFT_OUT_ENDPOINT_DELETED
        )
        Delivery.objects.filter(
            pk__in=[delivery for delivery, _ in left_out], claim_token=token, state=Delivery.State.CANCELED
        ).update(claim_token=None, claimed_until=None)


def claims_expire(claims: Sequence[Claimed], *, token: uuid.UUID) -> None:
    """End the claims now, as a dead worker's would expire, so that the deliveries can be claimed
    again at once; the attempts they opened are closed as interrupted when they are."""
    try:
        Delivery.objects.filter(pk__in=[claimed.delivery_id for claimed in claims], claim_token=token).update(
            claimed_until=timezone.now()
        )
    except DatabaseError:
        logger.warning("A batch's claims could not be given up: they expire by themselves", exc_info=True)


def claims_give_back(claims: Sequence[Claimed], *, token: uuid.UUID) -> None:
    """Undo the claims of deliveries whose attempts did not go out (their batch raised before
    sending them): no attempt was made, so their rows go and their counts go back, and they can
    be claimed again at once, under the same number. Only those the claim still holds: one
    another worker took over keeps its attempt."""
    with transaction.atomic():
        held = set(
            Delivery.objects.select_for_update()
            .filter(pk__in=[claimed.delivery_id for claimed in claims], claim_token=token)
            .values_list("pk", flat=True)
        )
        if not held:
            return
        DeliveryAttempt.objects.filter(pk__in=[claimed.attempt_id for claimed in claims
                                               if claimed.delivery_id in held]).delete()
        Delivery.objects.filter(pk__in=held).update(
            attempt_count=F("attempt_count") - 1, claim_token=None, claimed_until=None
        )


def claim_postgresql(
    *, scope: Scope, token: uuid.UUID, now: datetime, due_by: datetime, claimed_until: datetime, limit: int
) -> list[sql.ClaimRow]:
    """The claim as one statement (webhooks/sql.py)."""
    if scope.delivery_ids is not None:
        scope_sql, params = "c.id = ANY(%(ids)s)", {"ids": list(scope.delivery_ids)}
    else:
        scope_sql = "c.subject_id = %(subject)s AND NOT c.id = ANY(%(sent)s)"
        params = {"subject": scope.subject_id, "sent": list(scope.sent)}
    return sql.claim_postgresql(
        scope_sql=scope_sql, scope_params=params, limit=limit, token=token, now=now,
        due_by=due_by, claimed_until=claimed_until,
    )


def claim_portable(
    *, scope: Scope, token: uuid.UUID, now: datetime, due_by: datetime, claimed_until: datetime, limit: int
) -> list[sql.ClaimRow]:
    """The claim through the ORM, for databases without data-modifying WITH (SQLite, which
    `make run` uses): a few statements in a transaction."""
    if scope.delivery_ids is not None:
        deliveries = Delivery.objects.filter(pk__in=scope.delivery_ids)
    else:
        deliveries = Delivery.objects.filter(subject_id=scope.subject_id).exclude(pk__in=scope.sent)
    with transaction.atomic():
        pending = deliveries.filter(state=Delivery.State.PENDING)
        # Held, not sent: the endpoint was disabled after the delivery was published (a test
        # event goes all the same: sql.HELD_WHILE_DISABLED).
        held = (pending.filter(endpoint__enabled=False).exclude(subject_id=F("endpoint_id"))
                .select_for_update(skip_locked=True, of=("self",)))
        Delivery.objects.filter(pk__in=list(held.values_list("pk", flat=True))).update(
            state=Delivery.State.ENDPOINT_DISABLED, dispatched_at=None
        )
        ids = list(
            pending.filter(next_attempt_at__lte=due_by)
            .filter(Q(claimed_until__isnull=True) | Q(claimed_until__lt=now))
            .order_by("created_at", "pk")
            .select_for_update(skip_locked=True)
            .values_list("pk", flat=True)[:limit]
        )
        if not ids:
            return []  # sent already, not due yet, or another worker is sending them
        Delivery.objects.filter(pk__in=ids).update(
            attempt_count=F("attempt_count") + 1, claim_token=token, claimed_until=claimed_until
        )
        claimed = list(Delivery.objects.filter(pk__in=ids).select_related("endpoint").order_by("created_at", "pk"))
        retried = [delivery.pk for delivery in claimed if delivery.attempt_count > 1]
        if retried:
            DeliveryAttempt.objects.filter(delivery_id__in=retried, finished_at__isnull=True).update(
                finished_at=now, error=sql.INTERRUPTED
            )
        events = sql.events_to_send(event_ids={delivery.event_id for delivery in claimed}, now=now)
        attempts = DeliveryAttempt.objects.bulk_create(
            [DeliveryAttempt(delivery=delivery, endpoint_id=delivery.endpoint_id, number=delivery.attempt_count,
                             url=delivery.endpoint.url if delivery.endpoint else delivery.url, started_at=now)
             for delivery in claimed]
        )
    rows: list[sql.ClaimRow] = []
    for delivery, attempt in zip(claimed, attempts, strict=True):
        message_id, body, client_secrets = events[delivery.event_id]
        endpoint = delivery.endpoint
        rows.append((
            delivery.pk, attempt.url, delivery.owner_id, delivery.endpoint_id,
            shapes.headers_shown(endpoint.headers) if endpoint else {}, attempt.pk, attempt.number, message_id, body,
            secrets.signing_secrets_in_use(owner_id=delivery.owner_id, endpoint_id=endpoint.pk, now=now)
            if endpoint else client_secrets,
            endpoint.rate_limit_per_second if endpoint else None,
        ))
    return rows
