"""Webhook endpoints disabled (by the service, for failing, or by their clients) and the
deliveries held behind them until they are enabled again: how many of each by reason, and the
endpoints holding the most.

The held deliveries are counted by endpoint from the partial index delivery_held alone (it holds
only those rows), at most once in 15 s by a process (console/counted.py: the count grows with
them); the totals by reason and the ranking of the endpoints are made from those counts and the
disabled endpoints, read each time (a few columns of each, through the partial index
endpoint_disabled), so the page's totals and its list agree and the held rows are walked once.
An endpoint disabled since the count shows none held until the next.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit
from uuid import UUID

from django.db.models import Count
from django.urls import reverse

from console.counted import Counted
from webhooks.models import Delivery, Endpoint

HELD = Delivery.State.ENDPOINT_DISABLED
# Every reason an endpoint is disabled for: a figure for each, zero or not.
REASONS = [choice.value for choice in Endpoint.DisabledReason if choice.value]
# The endpoints the console lists, the most held first.
TOP = 50


@dataclass(frozen=True)
class ReasonRow:
    reason: str
    endpoints: int
    held: int


@dataclass(frozen=True)
class Totals:
    by_reason: list[ReasonRow]
    # Every held delivery's (one whose endpoint was deleted under it would count here alone).
    held: int

    @property
    def endpoints(self) -> int:
        return sum(row.endpoints for row in self.by_reason)


@dataclass(frozen=True)
class DisabledRow:
    endpoint: Endpoint
    held: int

    @property
    def receiver(self) -> str:
        # The host alone: a URL's path or query may carry the receiver's token.
        return urlsplit(self.endpoint.url).hostname or "(no host)"

    @property
    def admin_url(self) -> str:
        return reverse("admin:webhooks_endpoint_change", args=[self.endpoint.pk])


@dataclass(frozen=True)
class Disabled:
    totals: Totals
    # The endpoints holding the most deliveries (then the longest disabled).
    top: list[DisabledRow]


def _held_count(*, now: datetime) -> dict[UUID | None, int]:
    """Every held delivery, counted by endpoint. COUNT(*), not of a column: a column the index
    does not hold (the pk) would be read from the table, row by held row."""
    held = Delivery.objects.filter(state=HELD).values_list("endpoint").annotate(n=Count("*")).order_by()
    return dict(held)


# Each held delivery's index entry is read: 15 ms at 100,000 held (console/counted.py).
_held_counted = Counted(_held_count)


def _held_by_endpoint() -> dict[UUID | None, int]:
    return _held_counted.read().value


def _disabled() -> list[tuple[UUID, str, datetime | None]]:
    return list(Endpoint.objects.filter(enabled=False).values_list("pk", "disabled_reason", "disabled_at"))


def _totals(held: dict[UUID | None, int], disabled: list[tuple[UUID, str, datetime | None]]) -> Totals:
    endpoints = dict.fromkeys(REASONS, 0)
    held_by_reason = dict.fromkeys(REASONS, 0)
    for pk, reason, _ in disabled:
        if reason in endpoints:
            endpoints[reason] += 1
            held_by_reason[reason] += held.get(pk, 0)
    return Totals(
        by_reason=[ReasonRow(reason, endpoints[reason], held_by_reason[reason]) for reason in REASONS],
        held=sum(held.values()),
    )


def disabled_totals() -> Totals:
    """Disabled endpoints and their held deliveries, by reason."""
    return _totals(_held_by_endpoint(), _disabled())


def disabled_overview(*, limit: int = TOP) -> Disabled:
    """The totals, and the `limit` disabled endpoints holding the most deliveries (then the
    longest disabled) with their clients; never their headers, which may hold a receiver's
    credentials. Ranked here rather than by the database, which would count the held
    deliveries again, endpoint by endpoint."""
    held = _held_by_endpoint()
    disabled = _disabled()
    ranked = sorted(disabled, key=lambda row: (-held.get(row[0], 0), row[2] is None, row[2], row[0]))
    top = [pk for pk, _, _ in ranked[:limit]]
    endpoints = Endpoint.objects.filter(pk__in=top).select_related("owner").only(
        "id", "url", "disabled_reason", "disabled_at", "owner__name"
    ).in_bulk()
    return Disabled(
        totals=_totals(held, disabled),
        top=[DisabledRow(endpoints[pk], held.get(pk, 0)) for pk in top if pk in endpoints],
    )
