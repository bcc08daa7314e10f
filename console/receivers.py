"""Receivers whose deliveries fail: those with deliveries retrying after a failed attempt, or
given up on in the last hour, each with its last error.

A receiver is a registered endpoint, or the host of a job's own callback URL. The row links to
the endpoint's admin page (disabling it is an action there), or to the deliveries' list of the
callback host's failing deliveries (its `failing_host` filter).

The database counts every failing delivery by receiver (from the partial indexes delivery_failed
and delivery_due; a callback's by the host it was given, `Delivery.authority`), so one noisy
receiver's thousands of failures neither hide another's nor are capped; then the last error of
each receiver shown is read from its newest failing delivery. The count reads each failing
delivery (21-24 ms at 50,000, 55-105 ms at 192,000: docs/benchmarks.md), so a process
counts at most once in COUNTED_FOR_SECONDS (console/counted.py) and serves that count to the
console's refreshes (every 5 s, each open console) and /metrics' scrapes meanwhile; the last
errors are read on each refresh, for the 50 receivers listed.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit
from uuid import UUID

from django.db.models import Count, Max, OuterRef, Q, Subquery
from django.urls import reverse
from django.utils.http import urlencode

from console.counted import Counted
from webhooks.models import ATTEMPT_INTERNAL_ERROR, Delivery, DeliveryAttempt
from webhooks.selectors import deliveries_failing, delivery_authority

State = Delivery.State
# The receivers the console lists, the most failures first.
TOP = 50


def _host(authority: str) -> str:
    return urlsplit(f"//{authority}").hostname or "(no host)"


@dataclass
class ReceiverRow:
    receiver: str
    retrying: int = 0
    failed: int = 0
    # Its newest failing delivery's: the last error, when that attempt started, and the delivery.
    last_error: str = ""
    last_attempt_at: datetime | None = None
    last_delivery_id: int | None = None
    # The endpoint's admin page, or the deliveries list filtered to the callback's host.
    admin_url: str = ""

    @property
    def last_delivery_url(self) -> str:
        return reverse("admin:webhooks_delivery_change", args=[self.last_delivery_id]) if self.last_delivery_id else ""


@dataclass(frozen=True)
class Failing:
    # The receivers with the most failures, at most TOP of them.
    top: list[ReceiverRow]
    # Every failing receiver's count, shown or not.
    receivers: int

    @property
    def more(self) -> int:
        return self.receivers - len(self.top)


@dataclass
class _Count:
    endpoint_id: UUID | None
    host: str
    retrying: int = 0
    failed: int = 0
    newest: int = 0

    @property
    def total(self) -> int:
        return self.retrying + self.failed


def _counts(*, now: datetime) -> list[_Count]:
    """Every failing receiver's counts, the most failures first (then the newest failure). A
    callback host's deliveries are counted by host and port in the database and merged here."""
    rows = (
        deliveries_failing(now=now).values_list("endpoint", delivery_authority())
        .annotate(failed=Count("pk", filter=Q(state=State.FAILED)), retrying=Count("pk", filter=Q(state=State.PENDING)),
                  newest=Max("pk"))
        .order_by()
    )
    counts: dict[UUID | str, _Count] = {}
    for endpoint_id, authority, failed, retrying, newest in rows:
        host = "" if endpoint_id is not None else _host(authority)
        row = counts.setdefault(endpoint_id or host, _Count(endpoint_id, host))
        row.failed += failed
        row.retrying += retrying
        row.newest = max(row.newest, newest)
    return sorted(counts.values(), key=lambda row: (-row.total, -row.newest))


def _newest_with_last_attempt(ids: list[int]) -> dict[int, Delivery]:
    # Its receiver's last error: an attempt failed by our own fault (an internal error) is not.
    last = (DeliveryAttempt.objects.filter(delivery=OuterRef("pk"), finished_at__isnull=False)
            .exclude(error__startswith=ATTEMPT_INTERNAL_ERROR).order_by("-number"))
    return Delivery.objects.filter(pk__in=ids).only("id", "url", "endpoint_id").annotate(
        last_error=Subquery(last.values("error")[:1]),
        last_status=Subquery(last.values("status_code")[:1]),
        last_body=Subquery(last.values("response_body")[:1]),
        last_started=Subquery(last.values("started_at")[:1]),
        last_url=Subquery(last.values("url")[:1]),
    ).in_bulk()


def _error_text(delivery: Delivery) -> str:
    error = delivery.last_error  # type: ignore[attr-defined]
    if error:
        return str(error)
    body = (delivery.last_body or "").strip()[:200]  # type: ignore[attr-defined]
    return f"HTTP {delivery.last_status}" + (f": {body}" if body else "")  # type: ignore[attr-defined]


def _row(count: _Count, delivery: Delivery) -> ReceiverRow:
    # Where its last attempt went (the endpoint's URL then; an attempt older than migration
    # webhooks 0013 has none), which the error shown is about.
    host = urlsplit(delivery.last_url or delivery.url).hostname or "(no host)"  # type: ignore[attr-defined]
    if count.endpoint_id is not None:
        # An endpoint's own page (disable and enable are actions there).
        receiver = f"{host} (endpoint {str(count.endpoint_id)[:8]})"
        admin_url = reverse("admin:webhooks_endpoint_change", args=[count.endpoint_id])
    else:
        receiver = count.host
        # Its failing deliveries (the admin's filter reads those alone), not a search of every
        # delivery's URL for the host: 1.1-1.9 s a click at 1,000,000 deliveries.
        admin_url = reverse("admin:webhooks_delivery_changelist") + "?" + urlencode({"failing_host": count.host})
    return ReceiverRow(
        receiver=receiver, retrying=count.retrying, failed=count.failed, admin_url=admin_url,
        last_error=_error_text(delivery) if delivery.last_started else "",  # type: ignore[attr-defined]
        last_attempt_at=delivery.last_started, last_delivery_id=delivery.pk,  # type: ignore[attr-defined]
    )


@dataclass(frozen=True)
class _Counted:
    # The TOP receivers failing most, and how many fail in all.
    top: list[_Count]
    receivers: int


def _count(*, now: datetime) -> _Counted:
    counts = _counts(now=now)
    return _Counted(top=counts[:TOP], receivers=len(counts))


_counted = Counted(_count)


def receivers_failing_count(*, now: datetime) -> int:
    """How many receivers have failing deliveries (/metrics' jobapi_webhook_failing_receivers),
    as counted in the last COUNTED_FOR_SECONDS."""
    return _counted.read(now=now).value.receivers


def receivers_failing(*, now: datetime) -> Failing:
    """The TOP receivers with the most failing deliveries, each with its exact counts (as counted
    in the last COUNTED_FOR_SECONDS) and its newest failing delivery's last error, read now, and
    how many receivers fail in all."""
    counted = _counted.read(now=now).value
    newest = _newest_with_last_attempt([count.newest for count in counted.top])
    return Failing(top=[_row(count, newest[count.newest]) for count in counted.top if count.newest in newest],
                   receivers=counted.receivers)
