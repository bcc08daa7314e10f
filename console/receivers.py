"""Receivers whose deliveries fail: those with deliveries retrying after a failed attempt, or
given up on in the last hour, each with its last error.

A receiver is a registered endpoint, or the host of a job's own callback URL (`receiver_of`).
The row links to the endpoint's admin page (disabling it is an action there), or to the
deliveries' list filtered to the callback's host.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

from django.db.models import OuterRef, QuerySet, Subquery
from django.urls import reverse
from django.utils.http import urlencode

from console.selectors import WINDOW
from webhooks.models import Delivery, DeliveryAttempt, Endpoint

State = Delivery.State
# The most deliveries of each kind (retrying, given up on) read per refresh: the newest.
SCAN_LIMIT = 500


def receiver_of(delivery: Delivery) -> str:
    host = urlsplit(delivery.url).hostname or "(no host)"
    if delivery.endpoint_id is not None:
        return f"{host} (endpoint {str(delivery.endpoint_id)[:8]})"
    return host


@dataclass
class ReceiverRow:
    receiver: str
    retrying: int = 0
    failed: int = 0
    last_error: str = ""
    last_attempt_at: datetime | None = None
    last_delivery_id: int | None = None
    # The endpoint's admin page, or the deliveries list filtered to the callback's host.
    admin_url: str = ""

    @property
    def last_delivery_url(self) -> str:
        return reverse("admin:webhooks_delivery_change", args=[self.last_delivery_id]) if self.last_delivery_id else ""


def _with_last_attempt(deliveries: QuerySet[Delivery]) -> QuerySet[Delivery]:
    last = DeliveryAttempt.objects.filter(delivery=OuterRef("pk")).order_by("-number")
    return deliveries.annotate(
        last_error=Subquery(last.values("error")[:1]),
        last_status=Subquery(last.values("status_code")[:1]),
        last_body=Subquery(last.values("response_body")[:1]),
        last_started=Subquery(last.values("started_at")[:1]),
        last_finished=Subquery(last.values("finished_at")[:1]),
    )


def _error_text(delivery: Delivery) -> str:
    error = delivery.last_error  # type: ignore[attr-defined]
    if error:
        return str(error)
    body = (delivery.last_body or "").strip()[:200]  # type: ignore[attr-defined]
    return f"HTTP {delivery.last_status}" + (f": {body}" if body else "")  # type: ignore[attr-defined]


def receivers_failing(*, now: datetime) -> list[ReceiverRow]:
    """Receivers with failing deliveries, the most failures first."""
    failed = Delivery.objects.filter(state=State.FAILED, finished_at__gte=now - WINDOW).order_by("-finished_at")
    pending = Delivery.objects.filter(state=State.PENDING, attempt_count__gte=1).order_by("-next_attempt_at")
    rows: dict[str, ReceiverRow] = {}
    for kind, deliveries in (("failed", failed), ("retrying", pending)):
        for delivery in _with_last_attempt(deliveries)[:SCAN_LIMIT]:
            if kind == "retrying" and delivery.last_finished is None:  # type: ignore[attr-defined]
                continue  # its first attempt is still in flight: nothing failed yet
            key = receiver_of(delivery)
            row = rows.setdefault(key, ReceiverRow(
                receiver=key,
                # An endpoint's own page (disable and enable are actions there); a callback
                # host's deliveries.
                admin_url=reverse("admin:webhooks_endpoint_change", args=[delivery.endpoint_id])
                if delivery.endpoint_id is not None and Endpoint.objects.filter(pk=delivery.endpoint_id).exists()
                else reverse("admin:webhooks_delivery_changelist") + "?" + urlencode(
                    {"q": urlsplit(delivery.url).hostname or ""}),
            ))
            setattr(row, kind, getattr(row, kind) + 1)
            started = delivery.last_started  # type: ignore[attr-defined]
            if started is not None and (row.last_attempt_at is None or started > row.last_attempt_at):
                row.last_attempt_at, row.last_delivery_id = started, delivery.pk
                row.last_error = _error_text(delivery)
    return sorted(rows.values(), key=lambda row: (-(row.failed + row.retrying), row.receiver))
