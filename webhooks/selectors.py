"""Webhook reads: recent events, a subject's deliveries, the deliveries failing."""
from __future__ import annotations

import uuid
from collections.abc import Collection
from datetime import datetime, timedelta

from django.db.models import Case, Count, Prefetch, Q, QuerySet, Value, When
from django.db.models.functions import (
    Coalesce,
    Concat,
    Lower,
    NullIf,
    Replace,
    StrIndex,
    Substr,
)

from webhooks.models import (
    ATTEMPT_INTERNAL_ERROR,
    Delivery,
    DeliveryAttempt,
    Endpoint,
    Event,
)


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
    failed (one query); one failed by an internal error (ours, not its receiver's: webhooks/health.py)
    is neither. Read from attempt_endpoint_started: each endpoint's own attempts since
    `since`, whatever the table holds of other endpoints' or of its own earlier history. Through
    the deliveries it could not be bounded so: a delivery created long before may be attempted
    now (held while its endpoint was disabled, recovered, or late behind a rate limit), and
    PostgreSQL read every client's attempts to join them (docs/reliability.md)."""
    counts = (
        DeliveryAttempt.objects.filter(endpoint_id__in=endpoint_ids, started_at__gte=since, finished_at__isnull=False)
        .values("endpoint_id")
        .annotate(
            succeeded=Count("pk", filter=Q(status_code__gte=200, status_code__lt=300)),
            failed=Count("pk", filter=(~Q(status_code__gte=200, status_code__lt=300) | Q(status_code__isnull=True))
                         & ~Q(error__startswith=ATTEMPT_INTERNAL_ERROR)),
        )
    )
    return {row["endpoint_id"]: (row["succeeded"], row["failed"]) for row in counts}


# How long a delivery given up on counts as failing (the console's window, an hour).
FAILED_LATELY = timedelta(hours=1)


def deliveries_failing(*, now: datetime) -> QuerySet[Delivery]:
    """Given up on in the last FAILED_LATELY, or pending after a failed attempt: one made and not
    in flight (no claim), or more than one (the one in flight is a retry); but not one whose
    failed attempts were all the service's own fault (receiver_failed false: internal errors),
    which is not its receiver's failing. Read through the partial indexes delivery_failed and
    delivery_due: the failing deliveries and the pending ones, not the table (receiver_failed
    is read on the rows the count reads already)."""
    retrying = Q(state=Delivery.State.PENDING, attempt_count__gte=2) | Q(
        state=Delivery.State.PENDING, attempt_count=1, claim_token__isnull=True)
    return Delivery.objects.filter(
        Q(state=Delivery.State.FAILED, finished_at__gte=now - FAILED_LATELY) | retrying
    ).exclude(receiver_failed=False)


def delivery_authority() -> Case:
    """A callback URL's host[:port], lowercased (empty for an endpoint's delivery, which its
    endpoint names): the delivery's own `authority`, or for one made without it (before
    migration webhooks 0011, or whose endpoint was deleted) its URL's, parsed here. The URL was
    checked when it was given (core/http.py url_parse): http or https, no credentials, no
    spaces, so the host runs from '://' to the first '/', '?' or '#'."""
    rest = Substr("url", StrIndex("url", Value("://")) + 3)
    rest = Replace(Replace(rest, Value("?"), Value("/")), Value("#"), Value("/"))
    parsed = Lower(Substr(rest, 1, StrIndex(Concat(rest, Value("/")), Value("/")) - 1))
    return Case(When(endpoint__isnull=True, then=Coalesce(NullIf("authority", Value("")), parsed)),
                default=Value(""))


def deliveries_failing_to_host(*, now: datetime, host: str) -> QuerySet[Delivery]:
    """The failing deliveries (deliveries_failing) of the callback URLs on `host`, any port (the
    console's row of a callback host). Only the failing ones are read, through their partial
    indexes: a search of the host in every delivery's URL read the whole table (docs/reliability.md)."""
    host = host.lower()
    return (
        deliveries_failing(now=now).filter(endpoint__isnull=True).alias(callback_authority=delivery_authority())
        .filter(Q(callback_authority__in=[host, f"[{host}]"]) | Q(callback_authority__startswith=f"{host}:")
                | Q(callback_authority__startswith=f"[{host}]:"))
    )
