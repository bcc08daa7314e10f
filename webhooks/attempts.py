"""Delivery attempts: claim a batch, send it side by side (webhooks/sending.py: each within its
receiver's share), record each outcome and plan the next attempt (webhooks/recording.py)."""
from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence

from celery.worker import state as worker_state
from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError

from core import http
from webhooks import dispatch, recording, sealing, sending, signing, telemetry
from webhooks.claims import Claimed, Scope, claim, claims_expire, claims_give_back
from webhooks.models import ATTEMPT_INTERNAL_ERROR, Delivery
from webhooks.recording import AttemptOutcome

logger = logging.getLogger(__name__)

# The error of an attempt whose batch raised outside the attempts and their recording, and
# did so with it alone (then the exception's type's name).
SURPRISE = f"{ATTEMPT_INTERNAL_ERROR} sending"
# The error of an attempt whose signing secret no key opens (webhooks/sealing.py): not sent,
# retried on its schedule, in case the operator puts the previous SECRET_KEY back.
UNREADABLE_SECRET = f"{ATTEMPT_INTERNAL_ERROR} signing: the signing secret cannot be decrypted"


def _send(claimed: Claimed, resolver: http.Resolver | None) -> http.HttpResult:
    try:
        secrets_in_use = [sealing.unseal(token) for token in claimed.secrets]
    except sealing.SecretUnreadable as exc:
        logger.error("Delivery %s: not sent, %s", claimed.delivery_id, exc)
        return http.HttpResult(error=UNREADABLE_SECRET)
    headers = {
        **claimed.headers,  # an endpoint's own; their names never clash with ours (endpoint_api.py)
        "Content-Type": "application/json",
        "User-Agent": "jobapi-webhooks/1",
        **signing.headers_sign(
            secrets_in_use=secrets_in_use,
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
    within one batch. How many attempts were made. Ids whose batch failed as a whole (the
    database out of reach, or each delivery raising alone too: `_attempt`) go back to the queue,
    their claims given up, so that the next drain sends them."""
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
    outcomes, unsent, exc = _sent(claims, token=token, resolver=resolver)
    if exc is None or not unsent:
        return outcomes
    # Something outside the attempts (an attempt's own surprise is its outcome: sending.py) and
    # their recording (recording.py) raised before these went out.
    if len(claims) == 1:
        logger.error("Delivery %s: its batch of one raised; its attempt recorded as an internal error, "
                     "retried on its schedule", claims[0].delivery_id, exc_info=exc)
        return _told(recording.record_unrecorded(claims[0], error=f"{SURPRISE}: {type(exc).__name__}",
                                                 duration_ms=0, token=token))
    logger.warning("A batch of %s deliveries raised, %s of them not sent; sending each of those alone",
                   len(claims), len(unsent), exc_info=exc)
    claims_give_back(unsent, token=token)
    alone = _each_alone(unsent, resolver=resolver, others_went_out=len(unsent) < len(claims))
    if alone is None:
        raise BatchFailed(f"A batch of {len(claims)} deliveries raised, and each of them alone")
    return outcomes + alone


class BatchFailed(RuntimeError):
    """A batch raised, and so did each of its deliveries sent alone: the batch's fault (a bug in
    the sending, not one delivery's data), tried again as a whole."""


def _each_alone(
    claims: list[Claimed], *, resolver: http.Resolver | None, others_went_out: bool
) -> list[AttemptOutcome] | None:
    """The deliveries of a batch that raised before sending them, each sent as a batch of its
    own (its claim given back already), so that one whose data makes a batch raise fails only
    itself: its attempt is recorded as an internal error, retried on its schedule and given up
    at its end. Before, its batch raised at every drain, the other clients' deliveries in it
    with it, for ever. None when each of them raised too, and none of the batch went out (the
    sending's fault, not one delivery's): their claims are given back, for the batch to be tried
    again."""
    outcomes: list[AttemptOutcome] = []
    failed: list[tuple[Claimed, uuid.UUID, Exception]] = []
    taken = 0
    for claimed in claims:
        token = uuid.uuid4()
        alone = claim(scope=Scope(delivery_ids=[claimed.delivery_id]), token=token)
        taken += len(alone)
        if not alone:
            continue  # recorded after all (what raised came later), or another worker's now
        sent, unsent, exc = _sent(alone, token=token, resolver=resolver)
        outcomes += sent
        if exc is not None and unsent:
            failed.append((unsent[0], token, exc))
    if failed and len(failed) == taken and not others_went_out:
        for claimed, token, _ in failed:
            claims_give_back([claimed], token=token)
        return None
    for claimed, token, exc in failed:
        logger.error("Delivery %s: raised alone in its batch; its attempt recorded as an internal error, retried on "
                     "its schedule", claimed.delivery_id, exc_info=exc)
        outcomes += _told(recording.record_unrecorded(claimed, error=f"{SURPRISE}: {type(exc).__name__}",
                                                      duration_ms=0, token=token))
    return outcomes


def _sent(
    claims: list[Claimed], *, token: uuid.UUID, resolver: http.Resolver | None
) -> tuple[list[AttemptOutcome], list[Claimed], Exception | None]:
    """Send the batch and record its outcomes as they come: the attempts recorded; and should
    something outside the attempts and their recording raise, the claims whose attempts had not
    gone out, and what raised. Those that went out before it raised have their answers recorded,
    as always: sent again, their receivers would get them twice, by our fault. The database out
    of reach, or a deadlock, gives back the claims of the attempts not made, ends those of the
    ones made and not recorded, and raises."""
    went_out: dict[int, http.HttpResult] = {}
    recorded: list[AttemptOutcome] = []

    def send(claimed: Claimed) -> http.HttpResult:
        try:
            went_out[claimed.delivery_id] = result = _send(claimed, resolver)
        except Exception as exc:
            # Its own surprise, its outcome as sending.py records it: it may have reached its
            # receiver, so it is never given back as an attempt not made.
            went_out[claimed.delivery_id] = http.HttpResult(error=f"{SURPRISE}: {type(exc).__name__}")
            raise
        return result

    try:
        try:
            _send_and_record(claims, send, token=token, into=recorded)
            return recorded, [], None
        except (OperationalError, InterfaceError):
            raise
        except Exception as exc:  # noqa: BLE001 - a batch's surprise: what to do is its caller's
            raised = exc
        # Those the claim no longer holds were recorded (or put back) before it raised.
        held = set(Delivery.objects.filter(pk__in=[claimed.delivery_id for claimed in claims], claim_token=token)
                   .values_list("pk", flat=True))
        answered = [(claimed, went_out[claimed.delivery_id]) for claimed in claims
                    if claimed.delivery_id in held and claimed.delivery_id in went_out]
        unsent = [claimed for claimed in claims if claimed.delivery_id in held and claimed.delivery_id not in went_out]
        if not unsent:
            logger.warning("A batch of %s deliveries raised once its attempts had gone out; their answers recorded",
                           len(claims), exc_info=raised)
        if answered:
            recorded += _told(recording.record_each_if_need_be(answered, token=token))
        return recorded, unsent, raised
    except (OperationalError, InterfaceError):
        # The database out of reach, or a deadlock, once every lane has ended (send_batch raises
        # no sooner): `went_out` holds every attempt made. Those never sent have their claims
        # given back, no attempt spent; ended instead, each would show an attempt interrupted
        # that never went out, one of its schedule used up. The claims of the rest (and of
        # those, when the database cannot give them back) end now, as a dead worker's would, so
        # that they can be sent again at once; their attempts are closed as interrupted then.
        never_sent = [claimed for claimed in claims if claimed.delivery_id not in went_out]
        if never_sent:
            try:
                claims_give_back(never_sent, token=token)
            except DatabaseError:
                logger.warning("A batch's claims not sent could not be given back: they end as the others",
                               exc_info=True)
        claims_expire(claims, token=token)
        raise


def _send_and_record(
    claims: list[Claimed], send: sending.Send, *, token: uuid.UUID, into: list[AttemptOutcome]
) -> None:
    """Send the batch, recording each outcome as it comes (with those that came meanwhile: a
    transaction for many), not once the batch's slowest lane ends: an answer is in its delivery's
    log at once, a failed attempt's retry planned from when it failed, and a worker that dies
    meanwhile sends none of them again."""

    def finished(sent: list[tuple[Claimed, http.HttpResult | sending.Unsent]]) -> None:
        # Those that got no place in their client's share wait for one; the rest are recorded.
        sending.deliveries_put_back(
            unsent=[(claimed, result) for claimed, result in sent if isinstance(result, sending.Unsent)], token=token
        )
        answered = [(claimed, result) for claimed, result in sent if isinstance(result, http.HttpResult)]
        if answered:
            into.extend(_told(recording.record_each_if_need_be(answered, token=token)))

    sending.send_batch(claims, send, finished)


def _told(recorded: recording.Recorded) -> list[AttemptOutcome]:
    """Count and log the attempts recorded, and the deliveries given up; their outcomes."""
    telemetry.attempts_finished(recorded.attempts)
    if recorded.given_up:
        telemetry.deliveries_given_up([(claimed, result) for claimed, result in recorded.attempts
                                       if claimed.delivery_id in recorded.given_up])
    return recorded.outcomes
