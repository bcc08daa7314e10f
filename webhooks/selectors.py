"""Webhook reads: signing secrets in use, recent events, a subject's deliveries."""
from __future__ import annotations

import uuid
from collections.abc import Collection
from datetime import datetime

from django.db import connection
from django.db.models import Prefetch, QuerySet

from webhooks.models import Delivery, DeliveryAttempt, Event, SigningSecret


def signing_secret_current(*, owner_id: uuid.UUID) -> str | None:
    return (
        SigningSecret.objects.filter(owner_id=owner_id, expires_at__isnull=True)
        .values_list("secret", flat=True)
        .first()
    )


# The secrets that sign an owner's deliveries, as SQL on its signing secrets aliased `s`: the
# current one, then any rotated-out one still inside its overlap window (`{now}`: the time's
# placeholder). Shared by events_to_send and the delivery claim's single statement.
SECRET_IN_USE = "(s.expires_at IS NULL OR s.expires_at > {now})"
SECRETS_CURRENT_FIRST = "s.expires_at IS NOT NULL, s.created_at DESC, s.id DESC"


def events_to_send(*, event_ids: Collection[int], now: datetime) -> dict[int, tuple[str, bytes, list[str]]]:
    """Each event's webhook-id and body, with the secrets that sign it: the current one first,
    then any rotated-out one still inside its overlap window (none before first use).

    One query (an attempt's hot path; see docs/benchmarks.md): the events joined to their
    owners' secrets, a row per secret.
    """
    if not event_ids:
        return {}
    event_table = Event._meta.db_table
    secret_table = SigningSecret._meta.db_table
    placeholders = ", ".join(["%s"] * len(event_ids))
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            SELECT e.id, e.message_id, e.body, s.secret
            FROM {event_table} e
            LEFT JOIN {secret_table} s
              ON s.owner_id = e.owner_id AND {SECRET_IN_USE.format(now="%s")}
            WHERE e.id IN ({placeholders})
            ORDER BY e.id, {SECRETS_CURRENT_FIRST}
            """,
            [connection.ops.adapt_datetimefield_value(now), *event_ids],
        )
        rows = cursor.fetchall()
    events: dict[int, tuple[str, bytes, list[str]]] = {}
    for event_id, message_id, body, secret in rows:
        if event_id not in events:
            events[event_id] = (message_id, bytes(body), [])
        if secret is not None:
            events[event_id][2].append(secret)
    return events


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
