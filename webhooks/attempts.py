"""Delivery attempts: claim a batch, send it side by side (webhooks/sending.py: each within its
receiver's share), record each outcome and plan the next attempt.

Only the claim's holder moves a delivery on, so a success is never recorded twice. Every later
attempt's time is kept on the row: short delays ride on a countdown message, the rest wait for
the dispatcher.
"""
from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from celery.worker import state as worker_state
from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError, transaction
from django.utils import timezone

from core import http
from core.retry_after import retry_after_seconds
from webhooks import dispatch, health, sending, signing, sql, telemetry
from webhooks.claims import Claimed, Scope, claim
from webhooks.models import Delivery
from webhooks.retries import retry_delay_seconds

logger = logging.getLogger(__name__)

State = Delivery.State

# The error of an attempt whose outcome could not be recorded (then its type's name).
UNRECORDED = "Internal error while recording the outcome"


@dataclass(frozen=True)
class AttemptOutcome:
    """What one attempt did, as recorded on its DeliveryAttempt row."""

    delivery_id: int
    attempt_id: int
    number: int
    started_at: datetime
    finished_at: datetime
    duration_ms: int
    status_code: int | None
    response_body: str
    error: str


@dataclass
class Recorded:
    """What recording attempts wrote: their outcomes, each attempt as recorded (an outcome that
    could not be, as its error), and the deliveries given up."""

    outcomes: list[AttemptOutcome] = field(default_factory=list)
    attempts: list[tuple[Claimed, http.HttpResult]] = field(default_factory=list)
    given_up: set[int] = field(default_factory=set)


def _next_attempt_delay(*, result: http.HttpResult, attempts_made: int, now: datetime) -> float | None:
    """Seconds until the next attempt, or None when the delivery is over (success or not)."""
    if result.ok or result.status_code == 410:
        return None  # delivered; or Gone: the receiver asked us to stop
    delay = retry_delay_seconds(attempts_made=attempts_made, schedule=settings.WEBHOOK_RETRY_SCHEDULE)
    if delay is not None and result.status_code in (429, 503):
        retry_after = retry_after_seconds(
            result.headers.get("Retry-After"), now=now, max_seconds=settings.WEBHOOK_RETRY_AFTER_MAX_SECONDS
        )
        if retry_after is not None:
            delay = retry_after
    return delay


def _text(prefix: bytes) -> str:
    # PostgreSQL text cannot hold NUL; a receiver's body is shown, not trusted.
    return prefix.decode("utf-8", errors="replace").replace("\x00", "\ufffd")


def _send(claimed: Claimed, resolver: http.Resolver | None) -> http.HttpResult:
    headers = {
        **claimed.headers,  # an endpoint's own; their names never clash with ours (endpoint_api.py)
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
        resolve_for=claimed.owner_id,  # a client's hung name server holds up its own lookups only
    )


def deliveries_attempt(*, delivery_ids: Sequence[int], resolver: http.Resolver | None = None) -> list[AttemptOutcome]:
    """Send the next attempt of each delivery that is due and unclaimed; record the outcomes and
    plan the next attempts. Returns the attempts made (none for a delivery not ours to send)."""
    outcomes: list[AttemptOutcome] = []
    for start in range(0, len(delivery_ids), dispatch.BATCH_MAX_DELIVERIES):
        batch = delivery_ids[start : start + dispatch.BATCH_MAX_DELIVERIES]
        outcomes += _attempt(scope=Scope(delivery_ids=batch), resolver=resolver)
    return outcomes


def deliveries_drain(*, resolver: http.Resolver | None = None) -> int:
    """Send what the due queue holds (webhooks/dispatch.py), DRAIN_BATCH deliveries a batch, until
    it is empty, asking another drain to join while the batches are full; after
    DRAIN_MAX_SECONDS, or once its worker begins a warm shutdown (a deploy's SIGTERM), a fresh
    drain takes over the rest, so that no task runs for ever and a stopping worker finishes
    within one batch. How many attempts were made. Ids whose batch raised (the database refused
    it, or anything outside what one delivery's attempt may raise) go back to the queue, their
    claims given up, so that the next drain sends them."""
    dispatch.drain_started()
    made = 0
    hand_over_at = time.monotonic() + dispatch.DRAIN_MAX_SECONDS
    while time.monotonic() < hand_over_at and not _worker_stopping():
        delivery_ids = dispatch.due_take(dispatch.DRAIN_BATCH)
        if not delivery_ids:
            return made
        if len(delivery_ids) == dispatch.DRAIN_BATCH:
            dispatch.drain_ask()
        try:
            made += len(_attempt(scope=Scope(delivery_ids=delivery_ids), resolver=resolver, limit=len(delivery_ids)))
        except Exception:
            # Left off the queue, they would wait for the dispatcher (REDISPATCH_AFTER_SECONDS);
            # those sent or put back already are not claimed again.
            dispatch.due_put_back(delivery_ids)
            raise
    dispatch.drain_ask()
    return made


def _worker_stopping() -> bool:
    """The worker running this task began a warm shutdown: it consumes no new message, and the
    drain asked for next waits in the broker for a worker that stays."""
    stop = worker_state.should_stop  # an exit code once set; 0 (EX_OK), which equals False, too
    return stop is not None and stop is not False


def deliveries_send_for_subject(*, subject_id: uuid.UUID) -> int:
    """Send every due delivery of a subject now (the tail of a job's chain); how many were sent."""
    sent: list[int] = []
    while True:
        batch = _attempt(scope=Scope(subject_id=subject_id, sent=sent), resolver=None)
        sent += [outcome.delivery_id for outcome in batch]
        if len(batch) < dispatch.BATCH_MAX_DELIVERIES:  # none left that was due when this batch was claimed
            return len(sent)


def _attempt(
    *, scope: Scope, resolver: http.Resolver | None, limit: int = dispatch.BATCH_MAX_DELIVERIES
) -> list[AttemptOutcome]:
    token = uuid.uuid4()
    claims = claim(scope=scope, token=token, limit=limit)
    if not claims:
        return []
    try:
        return _send_and_record(claims, token=token, resolver=resolver)
    except Exception:
        # Something outside one delivery's attempt (which sending.py records as its own outcome)
        # raised: the batch's claims end now, as a dead worker's would, so that it can be sent
        # again at once; the attempts it left open are closed as interrupted when it is.
        _claims_expire(claims, token=token)
        raise


def _claims_expire(claims: Sequence[Claimed], *, token: uuid.UUID) -> None:
    try:
        Delivery.objects.filter(pk__in=[claimed.delivery_id for claimed in claims], claim_token=token).update(
            claimed_until=timezone.now()
        )
    except DatabaseError:
        logger.warning("A batch's claims could not be given up: they expire by themselves", exc_info=True)


def _send_and_record(
    claims: list[Claimed], *, token: uuid.UUID, resolver: http.Resolver | None
) -> list[AttemptOutcome]:
    sent = list(zip(claims, sending.send_batch(claims, lambda claimed: _send(claimed, resolver)), strict=True))
    # Those that got no place in their client's share wait for one; the rest are recorded.
    sending.deliveries_put_back(
        unsent=[(claimed, result) for claimed, result in sent if isinstance(result, sending.Unsent)], token=token
    )
    answered = [(claimed, result) for claimed, result in sent if isinstance(result, http.HttpResult)]
    if not answered:
        return []
    recorded = _record_each_if_need_be(answered, token=token)
    telemetry.attempts_finished(recorded.attempts)
    if recorded.given_up:
        telemetry.deliveries_given_up([(claimed, result) for claimed, result in recorded.attempts
                                       if claimed.delivery_id in recorded.given_up])
    return recorded.outcomes


def _record_each_if_need_be(answered: list[tuple[Claimed, http.HttpResult]], *, token: uuid.UUID) -> Recorded:
    """Record the batch's outcomes together; should that raise (but for the database out of reach,
    or a deadlock: the batch fails as a whole, and is tried again), each alone, so that a delivery
    whose outcome cannot be recorded (a value the database refuses, a bug) fails only itself:
    its attempt is recorded as an internal error instead, retried on its schedule and given up
    at its end as any failing attempt is. Before, it failed its batch, the other clients'
    deliveries with it, at every drain, for ever."""
    try:
        return _record(answered, token=token)
    except (OperationalError, InterfaceError):
        raise
    except Exception:
        if len(answered) > 1:
            logger.warning("A batch's %s outcomes could not be recorded together; recording each alone",
                           len(answered), exc_info=True)
    recorded = Recorded()
    for claimed, result in answered:
        try:
            alone = _record([(claimed, result)], token=token)
        except (OperationalError, InterfaceError):
            raise
        except Exception as exc:
            logger.exception("Delivery %s: its attempt's outcome could not be recorded; recorded as an internal "
                             "error, retried on its schedule", claimed.delivery_id)
            alone = _record_unrecorded(claimed, error=f"{UNRECORDED}: {type(exc).__name__}",
                                       duration_ms=result.duration_ms, token=token)
        recorded.outcomes += alone.outcomes
        recorded.attempts += alone.attempts
        recorded.given_up |= alone.given_up
    return recorded


def _record_unrecorded(claimed: Claimed, *, error: str, duration_ms: int, token: uuid.UUID) -> Recorded:
    """The attempt of a delivery whose outcome could not be recorded, as that error (the least
    there is to write: no status, no answer)."""
    try:
        return _record([(claimed, http.HttpResult(error=error, duration_ms=duration_ms))], token=token)
    except (OperationalError, InterfaceError):
        raise
    except Exception:
        # Not even that: its claim expires, as a dead worker's would, for the next drain.
        logger.exception("Delivery %s: its attempt's error could not be recorded either", claimed.delivery_id)
        _claims_expire([claimed], token=token)
        return Recorded()


def _record(answered: list[tuple[Claimed, http.HttpResult]], *, token: uuid.UUID) -> Recorded:
    """Record the attempts' outcomes and move their deliveries on, in one transaction."""
    claims, results = [claimed for claimed, _ in answered], [result for _, result in answered]
    now = timezone.now()
    outcomes: list[AttemptOutcome] = []
    # Deliveries by outcome: (state, seconds to the next attempt or None) -> ids. A batch's
    # outcomes are mostly alike (all delivered), so recording them is an UPDATE or two.
    next_steps: dict[tuple[str, float | None], list[int]] = {}
    for claimed, result in zip(claims, results, strict=True):
        outcomes.append(
            AttemptOutcome(
                delivery_id=claimed.delivery_id,
                attempt_id=claimed.attempt_id,
                number=claimed.attempt_number,
                started_at=claimed.started_at,
                finished_at=now,
                duration_ms=result.duration_ms,
                status_code=result.status_code,
                response_body=_text(result.body_prefix),
                error=result.error,
            )
        )
        delay = _next_attempt_delay(result=result, attempts_made=claimed.attempt_number, now=now)
        if result.ok:
            state = State.SUCCEEDED
        elif delay is None:
            state = State.FAILED
        else:
            state = State.PENDING
        next_steps.setdefault((state, delay), []).append(claimed.delivery_id)
    owned = 0
    given_up: set[int] = set()
    with transaction.atomic():
        sql.attempts_finish(
            [(o.attempt_id, o.finished_at, o.duration_ms, o.status_code, o.response_body, o.error) for o in outcomes]
        )
        for (state, delay), ids in next_steps.items():
            countdown = delay is not None and delay <= dispatch.COUNTDOWN_MAX_SECONDS
            # Only the claim's holder moves a delivery on; if the claim expired and another
            # worker took over, this attempt is logged but decides nothing. One canceled under
            # its claim (its endpoint deleted while the attempt was in flight) is moved by a
            # success only: nothing more goes to an endpoint that is gone.
            held = Delivery.objects.filter(pk__in=ids, claim_token=token)
            if state != State.SUCCEEDED:
                held = held.filter(state=State.PENDING)
            if state == State.FAILED:
                # Given up: which of them this batch still holds, locked so that they stay held
                # until moved (rare, a delivery's last attempt: a query more is nothing).
                ids = list(held.select_for_update().values_list("pk", flat=True))
                given_up.update(ids)
            moved = held.update(
                state=state,
                next_attempt_at=None if delay is None else now + timedelta(seconds=delay),
                dispatched_at=now if countdown else None,
                claim_token=None,
                claimed_until=None,
                finished_at=None if state == State.PENDING else now,
            )
            owned += moved
            if countdown:
                # A retry taken over by another worker is published too: its claim makes it a no-op.
                dispatch.deliveries_publish_on_commit(delivery_ids=ids, countdown=delay)
        if owned < len(outcomes):
            # Those canceled under their claim whose attempt did not succeed stay canceled.
            owned += Delivery.objects.filter(
                pk__in=[o.delivery_id for o in outcomes], claim_token=token, state=State.CANCELED
            ).update(claim_token=None, claimed_until=None)
        health.endpoints_record_outcomes(
            ((claimed.endpoint_id, result.ok, result.error or f"HTTP {result.status_code}")
             for claimed, result in zip(claims, results, strict=True)),
            now=now,
        )
    if owned < len(outcomes):
        logger.warning(
            "%s of %s delivery attempts finished after their claim expired", len(outcomes) - owned, len(outcomes)
        )
    return Recorded(outcomes=outcomes, attempts=answered, given_up=given_up)
