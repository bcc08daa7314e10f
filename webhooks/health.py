"""Endpoint health: each attempt's outcome kept on its endpoint (the run of failures, the last
success and failure, the last error), and the rule that disables an endpoint that keeps failing.

The rule: an endpoint is disabled once it has failed at least WEBHOOK_ENDPOINT_DISABLE_AFTER_FAILURES
attempts in a row over at least WEBHOOK_ENDPOINT_DISABLE_AFTER_SECONDS (both must hold, so a
burst of failures in a minute, or one failure a day, never disables it). Any success ends the
run. An attempt failed by the service's own fault (its error begins ATTEMPT_INTERNAL_ERROR: a
bug, not the receiver's answer) counts neither way: it neither adds to the run nor ends it.
Per-job callback_url deliveries have no endpoint and no health.
"""
from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import F
from django.db.models.functions import Coalesce

from core.timestamps import utc_iso
from webhooks import endpoints
from webhooks.models import ATTEMPT_INTERNAL_ERROR, Endpoint

# The most of an attempt's error or answer kept as the endpoint's last error.
LAST_ERROR_MAX_CHARS = 500


def endpoints_record_outcomes(outcomes: Iterable[tuple[uuid.UUID | None, bool, str]], *, now: datetime) -> None:
    """Record a batch's outcomes on their endpoints, in the caller's transaction: (endpoint id or
    None, succeeded, what went wrong) each. An endpoint with a success in the batch is healthy;
    one with only failures adds them to its run, and is disabled if the run meets the rule. An
    internal error (ours) is left out: counted, a bug of the service's disabled a client's
    endpoint whose receiver answered every attempt."""
    succeeded: set[uuid.UUID] = set()
    failed: dict[uuid.UUID, tuple[int, str]] = {}
    for endpoint_id, ok, error in outcomes:
        if endpoint_id is None or not ok and error.startswith(ATTEMPT_INTERNAL_ERROR):
            continue
        if ok:
            succeeded.add(endpoint_id)
        else:
            count, _ = failed.get(endpoint_id, (0, ""))
            failed[endpoint_id] = (count + 1, error)
    if succeeded:
        Endpoint.objects.filter(pk__in=succeeded).update(
            consecutive_failures=0, failing_since=None, last_success_at=now
        )
    for endpoint_id, (count, error) in failed.items():
        if endpoint_id in succeeded:
            continue
        Endpoint.objects.filter(pk=endpoint_id).update(
            consecutive_failures=F("consecutive_failures") + count,
            failing_since=Coalesce(F("failing_since"), now),
            last_failure_at=now,
            last_error=error[:LAST_ERROR_MAX_CHARS],
        )
        _disable_if_failing(endpoint_id, now=now)


def _disable_if_failing(endpoint_id: uuid.UUID, *, now: datetime) -> None:
    run = (
        Endpoint.objects.filter(pk=endpoint_id, enabled=True)
        .values_list("consecutive_failures", "failing_since")
        .first()
    )
    if run is None:
        return
    failures, since = run
    window = timedelta(seconds=settings.WEBHOOK_ENDPOINT_DISABLE_AFTER_SECONDS)
    if failures >= settings.WEBHOOK_ENDPOINT_DISABLE_AFTER_FAILURES and since is not None and now - since >= window:
        endpoints.endpoint_disable_failing(
            endpoint_id=endpoint_id,
            reason=f"{failures} attempts in a row failed since {utc_iso(since)}.",
        )
