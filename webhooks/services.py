"""Webhook writes: callback URL checks, signing secrets, the event outbox and delivery attempts.

An event is handed to `event_record` inside the transaction that changed its subject; its
body bytes and a pending Delivery are written there, and the first attempt is published once
that transaction commits. An attempt claims its delivery first (a conditional UPDATE that
takes a lease), so no two workers send the same delivery at once, and only the claim's
holder records the outcome, so a success is never recorded twice. Every later attempt's time
is kept on the row: short delays ride on a countdown, the rest wait for the dispatcher.
"""
from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import IntegrityError, connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from core import http
from core.db import delete_in_batches, insert_with_parent, update_returning
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
# The most deliveries one message carries (and one worker process sends side by side).
BATCH_MAX_DELIVERIES = 20


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
    event = Event(
        owner_id=owner_id,
        subject_id=subject_id,
        event_type=event_type,
        body=event_body(event_type=event_type, data=data, at=now),
        created_at=now,
    )
    delivery = Delivery(
        event=event,
        owner_id=owner_id,
        subject_id=subject_id,
        url=callback_url,
        next_attempt_at=now,
        dispatched_at=now,
        created_at=now,
    )
    # Both rows in one statement where the database can: a job's final transition waits on it.
    insert_with_parent(delivery, parent=event, link="event")
    if publish:
        _publish_on_commit(delivery_id=delivery.pk)
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
        _publish_on_commit(delivery_id=delivery.pk)
    return delivery


# --- Publishing ------------------------------------------------------------------------------


class _PublishOnCommit:
    """The on_commit callback that publishes every delivery one transaction recorded, in
    messages of up to BATCH_MAX_DELIVERIES: a thousand events recorded together are fifty
    messages, not a thousand (docs/benchmarks.md)."""

    def __init__(self, delivery_id: int) -> None:
        self.delivery_ids = [delivery_id]

    def __call__(self) -> None:
        deliveries_publish_or_release(delivery_ids=self.delivery_ids)


def _publish_on_commit(*, delivery_id: int) -> None:
    """Publish the delivery's first attempt once the caller's transaction commits."""
    db = transaction.get_connection()
    if db.in_atomic_block:
        # Join this transaction's pending batch. Django keeps on_commit callbacks in
        # `run_on_commit` and drops those of a savepoint rolled back, so a batch found here
        # will run; an id it carries whose row a savepoint rolled back claims nothing.
        for _, callback, _ in reversed(db.run_on_commit):
            if isinstance(callback, _PublishOnCommit):
                callback.delivery_ids.append(delivery_id)
                return
    transaction.on_commit(_PublishOnCommit(delivery_id))


def deliveries_publish_or_release(*, delivery_ids: Sequence[int], countdown: float | None = None) -> int:
    """Publish attempts, BATCH_MAX_DELIVERIES a message; what the broker refuses is left to the
    dispatcher. Returns how many were published."""
    for start in range(0, len(delivery_ids), BATCH_MAX_DELIVERIES):
        batch = list(delivery_ids[start : start + BATCH_MAX_DELIVERIES])
        try:
            tasks.deliveries_attempt_publish(delivery_ids=batch, countdown=countdown)
        except Exception:  # the broker's client raises many types; every one means "not published"
            logger.warning("Could not publish deliveries %s...; the dispatcher will", batch[0], exc_info=True)
            Delivery.objects.filter(pk__in=delivery_ids[start:], state=State.PENDING).update(dispatched_at=None)
            return start
    return len(delivery_ids)


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
    return deliveries_publish_or_release(delivery_ids=due)


# --- Attempts --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Claimed:
    """A delivery this worker holds the claim on, with what it takes to send the attempt."""

    delivery_id: int
    url: str
    attempt: DeliveryAttempt
    message_id: str
    body: bytes
    secrets: list[str]  # at least one: an owner's first delivery makes its secret


@dataclass(frozen=True)
class _Scope:
    """Which deliveries an attempt may claim: these ids, or a subject's (less those sent)."""

    delivery_ids: Sequence[int] | None = None
    subject_id: uuid.UUID | None = None
    sent: Sequence[int] = ()


_INTERRUPTED = "Interrupted: the worker sending this attempt stopped."


def _claim(*, scope: _Scope, token: uuid.UUID) -> list[_Claimed]:
    """Claim up to BATCH_MAX_DELIVERIES deliveries in `scope` that are due and unclaimed, and
    open their next attempts.

    The claim takes the rows it can lock at once (SKIP LOCKED where the database has it): a
    row another worker is claiming is left to that worker. A delivery claimed again after its
    claim expired (its worker died mid-attempt) has that attempt closed as interrupted.
    """
    now = timezone.now()
    due_by = now + timedelta(seconds=CLOCK_SKEW_SECONDS)
    claimed_until = now + timedelta(seconds=claim_lease_seconds())
    if connection.vendor == "postgresql":
        rows = _claim_postgresql(scope=scope, token=token, now=now, due_by=due_by, claimed_until=claimed_until)
    else:
        rows = _claim_portable(scope=scope, token=token, now=now, due_by=due_by, claimed_until=claimed_until)
    return [
        _Claimed(
            delivery_id=delivery_id,
            url=url,
            attempt=_attempt_of(attempt_id=attempt_id, delivery_id=delivery_id, number=number, started_at=now),
            message_id=message_id,
            body=body,
            secrets=secrets or [signing_secret_get_or_create(owner_id=owner_id)],
        )
        for delivery_id, url, owner_id, attempt_id, number, message_id, body, secrets in rows
    ]


def _attempt_of(*, attempt_id: int, delivery_id: int, number: int, started_at: datetime) -> DeliveryAttempt:
    """The attempt row the claim inserted, as a model instance (as the ORM loads one)."""
    attempt = DeliveryAttempt(pk=attempt_id, delivery_id=delivery_id, number=number, started_at=started_at)
    attempt._state.adding = False
    attempt._state.db = connection.alias
    return attempt


# One row per claimed delivery: (delivery id, url, owner id, attempt id, attempt number,
# webhook-id, body, the secrets that sign it: the current one first, then any rotated-out
# one still inside its overlap window; none before the owner's first delivery).
_ClaimRow = tuple[int, str, uuid.UUID, int, int, str, bytes, list[str]]


def _claim_postgresql(
    *, scope: _Scope, token: uuid.UUID, now: datetime, due_by: datetime, claimed_until: datetime
) -> list[_ClaimRow]:
    """The claim as one statement in autocommit: the UPDATE ... RETURNING of the rows, the
    interrupted attempts closed, the new attempts inserted, and the events with their secrets
    read back, all in one round trip and atomic as any single statement is. An attempt's
    hot path: the ORM's version (_claim_portable) took five round trips and most of an
    attempt's CPU (docs/benchmarks.md)."""
    if scope.delivery_ids is not None:
        where, params = "c.id = ANY(%(ids)s)", {"ids": list(scope.delivery_ids)}
    else:
        where, params = "c.subject_id = %(subject)s AND NOT c.id = ANY(%(sent)s)", {
            "subject": scope.subject_id,
            "sent": list(scope.sent),
        }
    sql = f"""
        WITH claimed AS (
            UPDATE {Delivery._meta.db_table} d
            SET attempt_count = d.attempt_count + 1, claim_token = %(token)s,
                claimed_until = %(claimed_until)s
            WHERE d.id IN (
                SELECT c.id FROM {Delivery._meta.db_table} c
                WHERE {where} AND c.state = %(pending)s AND c.next_attempt_at <= %(due_by)s
                  AND (c.claimed_until IS NULL OR c.claimed_until < %(now)s)
                ORDER BY c.created_at, c.id
                LIMIT {BATCH_MAX_DELIVERIES}
                FOR UPDATE SKIP LOCKED
            )
            RETURNING d.id, d.event_id, d.owner_id, d.url, d.attempt_count, d.created_at
        ), interrupted AS (
            UPDATE {DeliveryAttempt._meta.db_table} a SET finished_at = %(now)s, error = %(interrupted)s
            FROM claimed c
            WHERE a.delivery_id = c.id AND c.attempt_count > 1 AND a.finished_at IS NULL
        ), attempts AS (
            INSERT INTO {DeliveryAttempt._meta.db_table}
                (delivery_id, number, started_at, response_body, error)
            SELECT id, attempt_count, %(now)s, '', '' FROM claimed
            RETURNING id, delivery_id
        )
        SELECT c.id, c.url, c.owner_id, a.id, c.attempt_count, e.message_id, e.body,
               ARRAY(
                   SELECT s.secret FROM {SigningSecret._meta.db_table} s
                   WHERE s.owner_id = c.owner_id AND {selectors.SECRET_IN_USE.format(now="%(now)s")}
                   ORDER BY {selectors.SECRETS_CURRENT_FIRST}
               )
        FROM claimed c
        JOIN attempts a ON a.delivery_id = c.id
        JOIN {Event._meta.db_table} e ON e.id = c.event_id
        ORDER BY c.created_at, c.id
    """
    params.update(
        token=token, claimed_until=claimed_until, pending=State.PENDING, due_by=due_by, now=now,
        interrupted=_INTERRUPTED,
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return [(*row[:6], bytes(row[6]), row[7]) for row in cursor.fetchall()]


def _claim_portable(
    *, scope: _Scope, token: uuid.UUID, now: datetime, due_by: datetime, claimed_until: datetime
) -> list[_ClaimRow]:
    """The claim through the ORM, for databases without data-modifying WITH (SQLite, which
    `make run` uses): three statements in a transaction."""
    if scope.delivery_ids is not None:
        deliveries = Delivery.objects.filter(pk__in=scope.delivery_ids)
    else:
        deliveries = Delivery.objects.filter(subject_id=scope.subject_id).exclude(pk__in=scope.sent)
    candidates = (
        deliveries.filter(state=State.PENDING, next_attempt_at__lte=due_by)
        .filter(Q(claimed_until__isnull=True) | Q(claimed_until__lt=now))
        .order_by("created_at", "pk")
        .values("pk")[:BATCH_MAX_DELIVERIES]
    )
    with transaction.atomic():
        claimed = update_returning(
            Delivery.objects.filter(pk__in=candidates.select_for_update(skip_locked=True)),
            attempt_count=F("attempt_count") + 1,
            claim_token=token,
            claimed_until=claimed_until,
        )
        if not claimed:
            return []  # sent already, not due yet, or another worker is sending them
        claimed.sort(key=lambda delivery: (delivery.created_at, delivery.pk))
        retried = [delivery.pk for delivery in claimed if delivery.attempt_count > 1]
        if retried:
            DeliveryAttempt.objects.filter(delivery_id__in=retried, finished_at__isnull=True).update(
                finished_at=now, error=_INTERRUPTED
            )
        events = selectors.events_to_send(event_ids={delivery.event_id for delivery in claimed}, now=now)
        attempts = DeliveryAttempt.objects.bulk_create(
            [DeliveryAttempt(delivery=delivery, number=delivery.attempt_count, started_at=now) for delivery in claimed]
        )
    return [
        (delivery.pk, delivery.url, delivery.owner_id, attempt.pk, attempt.number, *events[delivery.event_id])
        for delivery, attempt in zip(claimed, attempts, strict=True)
    ]


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


def _send(claimed: _Claimed, resolver: http.Resolver | None) -> http.HttpResult:
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "jobapi-webhooks/1",
        **signing.headers_sign(
            secrets_in_use=claimed.secrets,
            message_id=claimed.message_id,
            timestamp=int(time.time()),  # fresh on every attempt
            body=claimed.body,
        ),
    }
    return http.post(
        claimed.url,
        body=claimed.body,
        headers=headers,
        timeout_seconds=settings.WEBHOOK_TIMEOUT_SECONDS,
        resolver=resolver,
    )


_senders: ThreadPoolExecutor | None = None


def _send_all(claims: list[_Claimed], resolver: http.Resolver | None) -> list[http.HttpResult]:
    """Send a batch's attempts side by side, so the batch takes as long as its slowest
    receiver (well inside the claim's lease and the task's time limit), not their sum."""
    global _senders
    if len(claims) == 1:
        return [_send(claims[0], resolver)]
    if _senders is None:  # made in the process that sends (a Celery pool process), not before the fork
        _senders = ThreadPoolExecutor(max_workers=BATCH_MAX_DELIVERIES, thread_name_prefix="webhook")
    return list(_senders.map(lambda claimed: _send(claimed, resolver), claims))


def deliveries_attempt(
    *, delivery_ids: Sequence[int], resolver: http.Resolver | None = None
) -> list[DeliveryAttempt]:
    """Send the next attempt of each delivery that is due and unclaimed; record the outcomes and
    plan the next attempts. Returns the attempts made (none for a delivery not ours to send)."""
    attempts: list[DeliveryAttempt] = []
    for start in range(0, len(delivery_ids), BATCH_MAX_DELIVERIES):
        batch = delivery_ids[start : start + BATCH_MAX_DELIVERIES]
        attempts += _attempt(scope=_Scope(delivery_ids=batch), resolver=resolver)
    return attempts


def _attempt(*, scope: _Scope, resolver: http.Resolver | None) -> list[DeliveryAttempt]:
    token = uuid.uuid4()
    claims = _claim(scope=scope, token=token)
    if not claims:
        return []
    results = _send_all(claims, resolver)
    now = timezone.now()
    attempts: list[DeliveryAttempt] = []
    # Deliveries by outcome: (state, seconds to the next attempt or None) -> ids. A batch's
    # outcomes are mostly alike (all delivered), so recording them is an UPDATE or two.
    outcomes: dict[tuple[str, float | None], list[int]] = {}
    for claimed, result in zip(claims, results, strict=True):
        attempt = claimed.attempt
        attempt.finished_at = now
        attempt.duration_ms = result.duration_ms
        attempt.status_code = result.status_code
        attempt.response_body = _text(result.body_prefix)
        attempt.error = result.error
        attempts.append(attempt)
        delay = _next_attempt_delay(result=result, attempts_made=attempt.number, now=now)
        if result.ok:
            state = State.SUCCEEDED
        elif delay is None:
            state = State.FAILED
        else:
            state = State.PENDING
        outcomes.setdefault((state, delay), []).append(claimed.delivery_id)
    owned = 0
    with transaction.atomic():
        _attempts_finish(attempts)
        for (state, delay), ids in outcomes.items():
            countdown = delay is not None and delay <= COUNTDOWN_MAX_SECONDS
            # Only the claim's holder moves a delivery on; if the claim expired and another
            # worker took over, this attempt is logged but decides nothing.
            owned += Delivery.objects.filter(pk__in=ids, claim_token=token).update(
                state=state,
                next_attempt_at=None if delay is None else now + timedelta(seconds=delay),
                dispatched_at=now if countdown else None,
                claim_token=None,
                claimed_until=None,
                finished_at=None if state == State.PENDING else now,
            )
            if countdown:
                # A retry taken over by another worker is published too: its claim makes it a no-op.
                transaction.on_commit(
                    lambda ids=ids, delay=delay: deliveries_publish_or_release(delivery_ids=ids, countdown=delay)
                )
    if owned < len(attempts):
        logger.warning(
            "%s of %s delivery attempts finished after their claim expired", len(attempts) - owned, len(attempts)
        )
    return attempts


def _attempts_finish(attempts: list[DeliveryAttempt]) -> None:
    """Record the attempts' outcomes: one plain UPDATE each (the ORM's bulk_update spent more
    time building its CASE expressions than the database spent running them)."""
    finished_at = DeliveryAttempt._meta.get_field("finished_at")
    with connection.cursor() as cursor:
        cursor.executemany(
            f"UPDATE {DeliveryAttempt._meta.db_table} SET finished_at = %s, duration_ms = %s, "
            "status_code = %s, response_body = %s, error = %s WHERE id = %s",
            [
                (
                    finished_at.get_db_prep_value(attempt.finished_at, connection),
                    attempt.duration_ms,
                    attempt.status_code,
                    attempt.response_body,
                    attempt.error,
                    attempt.pk,
                )
                for attempt in attempts
            ],
        )


def delivery_attempt(*, delivery_id: int, resolver: http.Resolver | None = None) -> DeliveryAttempt | None:
    """One delivery's next attempt (see deliveries_attempt); None if it was not ours to send."""
    attempts = deliveries_attempt(delivery_ids=[delivery_id], resolver=resolver)
    return attempts[0] if attempts else None


def deliveries_send_for_subject(*, subject_id: uuid.UUID) -> int:
    """Send every due delivery of a subject now (the tail of a job's chain); how many were sent."""
    sent: list[int] = []
    while True:
        batch = _attempt(scope=_Scope(subject_id=subject_id, sent=sent), resolver=None)
        sent += [attempt.delivery_id for attempt in batch]
        if len(batch) < BATCH_MAX_DELIVERIES:  # none left that was due when this batch was claimed
            return len(sent)


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
