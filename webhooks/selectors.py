"""Webhook reads: signing secrets in use, recent events, a subject's deliveries."""
from __future__ import annotations

import uuid
from datetime import datetime

from django.db.models import Prefetch, Q, QuerySet
from django.utils import timezone

from webhooks.models import Delivery, DeliveryAttempt, Event, SigningSecret


def signing_secret_current(*, owner_id: uuid.UUID) -> str | None:
    return (
        SigningSecret.objects.filter(owner_id=owner_id, expires_at__isnull=True)
        .values_list("secret", flat=True)
        .first()
    )


def signing_secrets_in_use(*, owner_id: uuid.UUID) -> list[str]:
    """The secrets every delivery is signed with: the current one first, then any rotated-out
    one still inside its overlap window."""
    rows = (
        SigningSecret.objects.filter(owner_id=owner_id)
        .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=timezone.now()))
        .order_by("-created_at", "-pk")
        .values_list("secret", "expires_at")
    )
    ordered = sorted(rows, key=lambda row: row[1] is not None)  # current first, stable otherwise
    return [secret for secret, _ in ordered]


def event_latest_at(*, subject_id: uuid.UUID, event_type: str) -> datetime | None:
    """When the subject's latest event of this type was recorded (for throttling)."""
    return (
        Event.objects.filter(subject_id=subject_id, event_type=event_type)
        .order_by("-created_at")
        .values_list("created_at", flat=True)
        .first()
    )


def delivery_ids_due(*, subject_id: uuid.UUID, now: datetime) -> list[int]:
    return list(
        Delivery.objects.filter(
            subject_id=subject_id, state=Delivery.State.PENDING, next_attempt_at__lte=now
        )
        .order_by("created_at", "pk")
        .values_list("pk", flat=True)
    )


def delivery_list(*, owner_id: uuid.UUID, subject_id: uuid.UUID) -> QuerySet[Delivery]:
    """A subject's deliveries with their event and attempts (three queries for a page)."""
    return (
        Delivery.objects.filter(owner_id=owner_id, subject_id=subject_id)
        .select_related("event")
        .defer("event__body")
        .prefetch_related(Prefetch("attempts", queryset=DeliveryAttempt.objects.order_by("number")))
    )
