"""Recording a batch's attempts: each outcome on its attempt's row, each delivery moved on (its
next attempt planned, or its end), its endpoint's health, in one transaction; and a delivery
whose outcome cannot be recorded, failing only itself.

Only the claim's holder moves a delivery on, so a success is never recorded twice. Every later
attempt's time is kept on the row: short delays ride on a countdown message, the rest wait for
the dispatcher.
"""
from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import InterfaceError, OperationalError, transaction
from django.db.models import Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from core import http
from core.retry_after import retry_after_seconds
from webhooks import dispatch, health, sql
from webhooks.claims import Claimed, claims_expire
from webhooks.models import ATTEMPT_INTERNAL_ERROR, Delivery
from webhooks.retries import retry_delay_seconds

logger = logging.getLogger(__name__)

State = Delivery.State

# The error of an attempt whose outcome could not be recorded (then its type's name).
UNRECORDED = f"{ATTEMPT_INTERNAL_ERROR} recording the outcome"


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


def record_each_if_need_be(answered: list[tuple[Claimed, http.HttpResult]], *, token: uuid.UUID) -> Recorded:
    """Record the batch's outcomes together; should that raise (but for the database out of reach,
    or a deadlock: the batch fails as a whole, and is tried again), each alone, so that a delivery
    whose outcome cannot be recorded (a value the database refuses, a bug) fails only itself:
    its attempt is recorded as an internal error instead, retried on its schedule and given up
    at its end as any failing attempt is. Before, it failed its batch, the other clients'
    deliveries with it, at every drain, for ever."""
    try:
        return record(answered, token=token)
    except (OperationalError, InterfaceError):
        raise
    except Exception:
        if len(answered) > 1:
            logger.warning("A batch's %s outcomes could not be recorded together; recording each alone",
                           len(answered), exc_info=True)
    recorded = Recorded()
    for claimed, result in answered:
        try:
            alone = record([(claimed, result)], token=token)
        except (OperationalError, InterfaceError):
            raise
        except Exception as exc:
            logger.exception("Delivery %s: its attempt's outcome could not be recorded; recorded as an internal "
                             "error, retried on its schedule", claimed.delivery_id)
            alone = record_unrecorded(claimed, error=f"{UNRECORDED}: {type(exc).__name__}",
                                       duration_ms=result.duration_ms, token=token)
        recorded.outcomes += alone.outcomes
        recorded.attempts += alone.attempts
        recorded.given_up |= alone.given_up
    return recorded


def record_unrecorded(claimed: Claimed, *, error: str, duration_ms: int, token: uuid.UUID) -> Recorded:
    """The attempt of a delivery whose outcome could not be recorded, as that error (the least
    there is to write: no status, no answer); nothing if the claim no longer holds it (what
    raised came after its outcome was recorded, or another worker took it over)."""
    if not Delivery.objects.filter(pk=claimed.delivery_id, claim_token=token).exists():
        return Recorded()
    try:
        return record([(claimed, http.HttpResult(error=error, duration_ms=duration_ms))], token=token)
    except (OperationalError, InterfaceError):
        raise
    except Exception:
        # Not even that: its claim expires, as a dead worker's would, for the next drain.
        logger.exception("Delivery %s: its attempt's error could not be recorded either", claimed.delivery_id)
        claims_expire([claimed], token=token)
        return Recorded()


def _receiver_failed(failed_at_receiver: bool | None) -> dict[str, object]:
    """What an attempt's outcome says of its delivery's receiver_failed: True once its receiver
    failed it; an internal error leaves a receiver's earlier failure as it was (False before
    any); a success leaves it."""
    if failed_at_receiver is None:
        return {}
    return {"receiver_failed": True if failed_at_receiver else Coalesce("receiver_failed", Value(False))}


def record(answered: list[tuple[Claimed, http.HttpResult]], *, token: uuid.UUID) -> Recorded:
    """Record the attempts' outcomes and move their deliveries on, in one transaction."""
    claims, results = [claimed for claimed, _ in answered], [result for _, result in answered]
    now = timezone.now()
    outcomes: list[AttemptOutcome] = []
    # Deliveries by outcome: (state, seconds to the next attempt or None, whose failure it was:
    # the receiver's, ours (an internal error) or None for a success) -> ids. A batch's outcomes
    # are mostly alike (all delivered), so recording them is an UPDATE or two.
    next_steps: dict[tuple[str, float | None, bool | None], list[int]] = {}
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
        failed_at_receiver = None if result.ok else not result.error.startswith(ATTEMPT_INTERNAL_ERROR)
        next_steps.setdefault((state, delay, failed_at_receiver), []).append(claimed.delivery_id)
    owned = 0
    given_up: set[int] = set()
    with transaction.atomic():
        sql.attempts_finish(
            [(o.attempt_id, o.finished_at, o.duration_ms, o.status_code, o.response_body, o.error) for o in outcomes]
        )
        for (state, delay, failed_at_receiver), ids in next_steps.items():
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
                **_receiver_failed(failed_at_receiver),
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
