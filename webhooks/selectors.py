"""Webhook reads: recent events, a subject's deliveries."""
from __future__ import annotations

import uuid
from datetime import datetime

from django.db.models import Prefetch, QuerySet

from webhooks.models import Delivery, DeliveryAttempt, Event


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
