"""Webhook endpoints disabled (by the service, for failing, or by their clients) and the
deliveries held behind them until they are enabled again: how many of each by reason, and the
endpoints holding the most. Each read is served by a partial index (webhooks' endpoint_disabled
and delivery_held), which holds only those rows, however large the tables grow.
"""
from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from django.db.models import Count, F, IntegerField, OuterRef, Subquery, Value
from django.db.models.functions import Coalesce
from django.urls import reverse

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


def disabled_totals() -> Totals:
    """Disabled endpoints and their held deliveries, by reason (two index-only counts)."""
    endpoints = dict(
        Endpoint.objects.filter(enabled=False).values_list("disabled_reason").annotate(n=Count("pk")).order_by()
    )
    held = dict(
        Delivery.objects.filter(state=HELD).values_list("endpoint__disabled_reason").annotate(n=Count("pk")).order_by()
    )
    return Totals(
        by_reason=[ReasonRow(reason, endpoints.get(reason, 0), held.get(reason, 0)) for reason in REASONS],
        held=sum(held.values()),
    )


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


def disabled_endpoints(*, limit: int = TOP) -> list[DisabledRow]:
    """The disabled endpoints holding the most deliveries (then the longest disabled), with
    their clients; never their headers, which may hold a receiver's credentials."""
    held = (
        Delivery.objects.filter(endpoint=OuterRef("pk"), state=HELD)
        .order_by().values("endpoint").annotate(n=Count("pk")).values("n")
    )
    endpoints = (
        Endpoint.objects.filter(enabled=False)
        .select_related("owner")
        .only("id", "url", "disabled_reason", "disabled_at", "owner__name")
        .annotate(held=Coalesce(Subquery(held, output_field=IntegerField()), Value(0)))
        .order_by("-held", F("disabled_at").asc(nulls_last=True), "pk")[:limit]
    )
    return [DisabledRow(endpoint, endpoint.held) for endpoint in endpoints]  # type: ignore[attr-defined]
