"""Webhook reads: recent events, a subject's deliveries."""
from __future__ import annotations

import uuid
from collections.abc import Collection
from datetime import datetime

from django.db.models import Count, Prefetch, Q, QuerySet

from webhooks.models import Delivery, DeliveryAttempt, Endpoint, Event


def event_latest_at(*, subject_id: uuid.UUID, event_type: str) -> datetime | None:
    """When the subject's latest event of this type was recorded (for throttling)."""
    return (
        Event.objects.filter(subject_id=subject_id, event_type=event_type)
        .order_by("-created_at")
        .values_list("created_at", flat=True)
        .first()
    )


def delivery_list(*, owner_id: uuid.UUID, subject_id: uuid.UUID) -> QuerySet[Delivery]:
    """A subject's deliveries with their event and attempts (three queries for a page)."""
    return (
        Delivery.objects.filter(owner_id=owner_id, subject_id=subject_id)
        .select_related("event")
        .defer("event__body")
        .prefetch_related(Prefetch("attempts", queryset=DeliveryAttempt.objects.order_by("number")))
    )


def deliveries_of_owner(*, owner_id: uuid.UUID) -> QuerySet[Delivery]:
    """The owner's deliveries, across jobs and endpoints, with their event and attempts."""
    return (
        Delivery.objects.filter(owner_id=owner_id)
        .select_related("event")
        .defer("event__body")
        .prefetch_related(Prefetch("attempts", queryset=DeliveryAttempt.objects.order_by("number")))
    )


def endpoints_of_owner(*, owner_id: uuid.UUID) -> QuerySet[Endpoint]:
    return Endpoint.objects.filter(owner_id=owner_id)


def endpoint_attempt_counts(*, endpoint_ids: Collection[uuid.UUID], since: datetime) -> dict[uuid.UUID, tuple[int, int]]:
    """Per endpoint, its attempts started since `since` and finished that succeeded (2xx) and that
    failed (one query). Read from attempt_endpoint_started: each endpoint's own attempts since
    `since`, whatever the table holds of other endpoints' or of its own earlier history. Through
    the deliveries it could not be bounded so: a delivery created long before may be attempted
    now (held while its endpoint was disabled, recovered, or late behind a rate limit), and
    PostgreSQL read every client's attempts to join them (docs/reliability.md)."""
    counts = (
        DeliveryAttempt.objects.filter(endpoint_id__in=endpoint_ids, started_at__gte=since, finished_at__isnull=False)
        .values("endpoint_id")
        .annotate(
            succeeded=Count("pk", filter=Q(status_code__gte=200, status_code__lt=300)),
            failed=Count("pk", filter=~Q(status_code__gte=200, status_code__lt=300) | Q(status_code__isnull=True)),
        )
    )
    return {row["endpoint_id"]: (row["succeeded"], row["failed"]) for row in counts}
