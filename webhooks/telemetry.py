"""What delivery attempts tell their operators: each attempt's outcome, counted by kind
(core/metrics.py), and one log line (INFO) with the delivery's context; a delivery given up
after its last attempt one line (INFO), and each client's given up one WARNING line at most a
minute per process; an endpoint the service disabled (counted by reason), one line (WARNING).
Called once the attempts' HTTP results are known, or the disabling committed, never deciding
anything.

The subject of every event today is a job (webhooks/outbox.py), so the lines name it `job_id`,
the key operators grep for across the service.
"""
from __future__ import annotations

import re
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from django.utils import timezone

from core import log_volume, logs, metrics
from webhooks.models import ATTEMPT_INTERNAL_ERROR, Delivery, Endpoint

if TYPE_CHECKING:
    from core.http import HttpResult
    from webhooks.claims import Claimed

log = logs.get_logger("webhooks.attempts")
endpoint_log = logs.get_logger("webhooks.endpoints")

# The event's time, near the start of its body: outbox.event_body writes "type", "timestamp",
# then "data" (reading it there spares a query per success).
_EVENT_TIMESTAMP = re.compile(rb'"timestamp":"([^"]{1,40})"')


# Every value attempt_outcome answers.
OUTCOMES = ("success", "http_error", "timeout", "refused", "blocked", "tls_error", "connection_error", "error",
            "internal_error")


# Every reason the service disables an endpoint for (a client's own disabling is not counted).
DISABLED_REASONS = (Endpoint.DisabledReason.FAILING.value,)


def attempt_outcome(result: HttpResult) -> str:
    """The kind of outcome, a label with a handful of values (never the receiver's text)."""
    if result.ok:
        return "success"
    if result.status_code is not None:
        return "http_error"
    if result.refused:
        return "blocked"  # the address guard refused the URL: nothing was sent
    error = result.error
    if error.startswith(ATTEMPT_INTERNAL_ERROR):
        return "internal_error"  # a bug of ours (its sending, its recording), not the receiver's
    if " within " in error or "timed out" in error:
        return "timeout"
    if "Connection refused" in error:
        return "refused"  # nothing listens there: the receiver is down
    if error.startswith("TLS error"):
        return "tls_error"
    if error.startswith("Connection failed"):
        return "connection_error"
    return "error"


def event_time(body: bytes) -> datetime | None:
    match = _EVENT_TIMESTAMP.search(body[:200])
    if match is None:
        return None
    try:
        return datetime.fromisoformat(match.group(1).decode())
    except ValueError:
        return None


def attempts_finished(attempts: Iterable[tuple[Claimed, HttpResult]]) -> None:
    """Count each attempt by outcome; a success, the time from its event to now (a redelivery
    of an event delivered before counts from the event too); log each at INFO."""
    attempts = list(attempts)
    now = timezone.now()
    for claimed, result in attempts:
        outcome = attempt_outcome(result)
        delivered_after = None
        if outcome == "success" and (at := event_time(claimed.body)) is not None:
            delivered_after = (now - at).total_seconds()
        metrics.webhook_attempted(outcome=outcome, delivered_after_seconds=delivered_after)
    if log.is_enabled_for(logs.INFO):
        _log(attempts)


def _lines(attempts: list[tuple[Claimed, HttpResult]]) -> Iterator[tuple[Claimed, HttpResult, dict[str, object]]]:
    """Each attempt with what a line says of it: its delivery, its job, the receiver's answer, its
    client. The batch's subjects: one indexed query, made only when lines are written."""
    subjects: dict[int, uuid.UUID] = dict(
        Delivery.objects.filter(pk__in=[claimed.delivery_id for claimed, _ in attempts]).values_list("pk", "subject_id")
    )
    context = logs.context()
    asker, asker_job = context.get("client"), context.get("job_id")
    for claimed, result in attempts:
        job_id = subjects.get(claimed.delivery_id)
        yield claimed, result, {
            "delivery_id": claimed.delivery_id, "webhook_id": claimed.message_id,
            "job_id": job_id, "outcome": attempt_outcome(result),
            "status_code": result.status_code, "receiver": urlsplit(claimed.url).hostname,
            "error": result.error[:300] or None,
            **_own_context(claimed.owner_id, asker=asker, own_job=asker_job == str(job_id)),
        }


def _log(attempts: list[tuple[Claimed, HttpResult]]) -> None:
    for claimed, result, line in _lines(attempts):
        log.info("webhook attempt", attempt=claimed.attempt_number, duration_ms=result.duration_ms, **line)


# A client's deliveries given up: one WARNING line a client every GIVEN_UP_WARNING_SECONDS per
# worker process, however many (a client whose callback_url always fails had one a job).
GIVEN_UP_WARNING_SECONDS = 60.0
_given_up = log_volume.CountedPerKey(seconds=GIVEN_UP_WARNING_SECONDS)


def deliveries_given_up(attempts: list[tuple[Claimed, HttpResult]]) -> None:
    """Deliveries whose last attempt failed (a receiver failing for the whole retry schedule, 28 h
    by default). Each is one INFO line, so that at LOG_LEVEL=INFO `grep <job id>` finds the
    webhook its client never got, with the receiver's host and its last answer; and each client's
    are one WARNING line at most every GIVEN_UP_WARNING_SECONDS per process, whatever LOG_LEVEL,
    with how many were given up since its previous one and the last of them: a line a client
    could have written once per job and event at will, where the operator needs to know which
    client's receiver fails (the console's receivers say how much, the delivery log which)."""
    by_client = Counter(claimed.owner_id for claimed, _ in attempts)
    due = {owner_id: _given_up.due(str(owner_id), count=count) for owner_id, count in by_client.items()}
    if not (log.is_enabled_for(logs.INFO) or any(due.values())):
        return
    last: dict[uuid.UUID, tuple[Claimed, dict[str, object]]] = {}
    for claimed, _, line in _lines(attempts):
        log.info("webhook delivery given up", attempts=claimed.attempt_number, **line)
        last[claimed.owner_id] = (claimed, line)
    for owner_id, (claimed, line) in last.items():
        if due[owner_id]:
            log.warning("webhook deliveries given up", given_up=due[owner_id], attempts=claimed.attempt_number,
                        interval_seconds=GIVEN_UP_WARNING_SECONDS, **line)


def _own_context(owner_id: uuid.UUID, *, asker: str | None, own_job: bool = True) -> dict[str, object]:
    """A line's client. A drain (or a batch of retries) sends whichever deliveries are due, any
    client's and any job's, in the context of the request or task that asked for it (`asker`, its
    client): each line names its own delivery's client, and the request id only when what asked
    was about that delivery's own job too (`own_job`: a job's chain tail sending its webhooks,
    whose request id is the job's submission's). A drain asked for by one job's finish sends
    the client's other jobs' deliveries too, and their lines named that job's request."""
    own: dict[str, object] = {"client": owner_id}
    if asker != str(owner_id) or not own_job:
        own["request_id"] = None
    return own


def endpoint_disabled(*, endpoint: Endpoint, detail: str) -> None:
    """The service disabled `endpoint` (its `disabled_reason`): count it, and log it at WARNING,
    naming the receiver's host only (a URL's path or query may carry a token)."""
    metrics.webhook_endpoint_disabled(reason=endpoint.disabled_reason)
    endpoint_log.warning(
        "webhook endpoint disabled", endpoint_id=endpoint.pk, receiver=urlsplit(endpoint.url).hostname,
        reason=endpoint.disabled_reason, detail=detail,
        **_own_context(endpoint.owner_id, asker=logs.context().get("client")),
    )
