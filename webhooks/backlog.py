"""The bound on a paced endpoint's backlog: a client whose endpoint has as many deliveries waiting
for its pace as one may (WEBHOOK_MAX_BACKLOG_PER_ENDPOINT) has its submissions that would add to
it refused, rather than its events dropped or the backlog left to grow.

Paced deliveries are never dropped, and their events are kept past their retention until they
are sent, so without this an endpoint paced below its client's rate of events gathered rows
without a bound of any kind: at the least pace (0.01 a second) 864 go a day, while a client at
the default submission rate records 8.6 million final events a day, each a delivery to each of
its endpoints (up to 20) and an event body kept with it."""
from __future__ import annotations

import math
import uuid
from datetime import datetime
from typing import NamedTuple

from django.conf import settings

from core.errors import TooManyRequests
from webhooks.endpoints import has_endpoints_cached
from webhooks.models import Endpoint


class Backlog(NamedTuple):
    """One paced endpoint's deliveries waiting for its pace, as a fraction of slots."""

    endpoint_id: uuid.UUID
    waiting: float
    rate_limit_per_second: float

    @property
    def waiting_deliveries(self) -> int:
        """How many wait, whole, as a refusal's details and `GET /api/limits/` give it."""
        return int(self.waiting)


def endpoint_backlogs(*, owner_id: uuid.UUID, now: datetime) -> list[Backlog]:
    """The owner's enabled, paced endpoints with deliveries waiting for their slots, and how many
    wait. How many is read off the endpoint's row, not counted: its next free slot is that many
    slots of its pace away (webhooks.outbox gives each delivery the next one). One indexed read
    of at most WEBHOOK_MAX_ENDPOINTS_PER_CLIENT rows."""
    paced = Endpoint.objects.filter(
        owner_id=owner_id, enabled=True, rate_limit_per_second__isnull=False, next_slot_at__gt=now
    ).values_list("pk", "next_slot_at", "rate_limit_per_second")
    return [Backlog(endpoint_id, (next_slot_at - now).total_seconds() * rate, rate)
            for endpoint_id, next_slot_at, rate in paced]


def endpoint_backlog_require_room(*, owner_id: uuid.UUID, now: datetime) -> None:
    """Raise 429 `webhook_backlog_full` when one of the owner's enabled, paced endpoints has
    WEBHOOK_MAX_BACKLOG_PER_ENDPOINT deliveries or more waiting for their slots
    (endpoint_backlogs). An owner without endpoints (nearly every one) costs no query: the
    subscriptions it has are remembered for WEBHOOK_ENDPOINT_CACHE_SECONDS, read again once that
    long has passed."""
    most = settings.WEBHOOK_MAX_BACKLOG_PER_ENDPOINT
    if not most or not has_endpoints_cached(owner_id=owner_id):
        return
    # Every full one is weighed, and the refusal names the one that needs longest: named after
    # the first the database returned, a client that waited out its Retry-After was refused
    # again for another, slower one (two endpoints paced at 0.01 and 0.02 a second: told 100 s,
    # refused again at 100 s for the 100 s more the slower one needed).
    full: tuple[int, Backlog] | None = None
    for backlog in endpoint_backlogs(owner_id=owner_id, now=now):
        if backlog.waiting >= most:
            # Until one slot below the bound has come.
            seconds = max(math.ceil((backlog.waiting - most + 1) / backlog.rate_limit_per_second), 1)
            if full is None or seconds > full[0]:
                full = (seconds, backlog)
    if full is not None:
        seconds, backlog = full
        raise TooManyRequests(
            f"Your webhook endpoint {backlog.endpoint_id} has about {backlog.waiting_deliveries} deliveries waiting for its "
            f"pace, the most one may have ({most}); jobs that would add to them are refused until it "
            "has sent some. Raise its rate_limit_per_second, or submit with webhook_endpoints false.",
            code="webhook_backlog_full",
            details={"endpoint_id": str(backlog.endpoint_id), "waiting_deliveries": backlog.waiting_deliveries,
                     "max_waiting_deliveries": most},
            headers={"Retry-After": str(seconds)},
        )
