"""Webhook delivery: timeouts, the retry schedule, which networks callbacks may reach, secrets."""
from __future__ import annotations

import ipaddress

from django.core.exceptions import ImproperlyConfigured

from core.settings.base import CENTURY_SECONDS, env

# Seconds a whole attempt may take (DNS, connect, TLS, status, headers, body), however slowly the
# receiver sends; it ends within this plus core.deadlines.SLACK_SECONDS (1 s).
WEBHOOK_TIMEOUT_SECONDS = env.float("WEBHOOK_TIMEOUT_SECONDS", default=15.0, above=0)
# A client's attempts in flight at once, across every deliveries worker (0: no cap): to one
# receiver host (host name and port), and to all of them; the others wait their turn, holding no
# worker. Each client's share is its own, so a client whose receivers hang holds at most
# WEBHOOK_MAX_IN_FLIGHT_PER_CLIENT of the deliveries workers' threads (docs/webhooks.md).
WEBHOOK_MAX_IN_FLIGHT_PER_HOST = env.int("WEBHOOK_MAX_IN_FLIGHT_PER_HOST", default=4, minimum=0)
WEBHOOK_MAX_IN_FLIGHT_PER_CLIENT = env.int("WEBHOOK_MAX_IN_FLIGHT_PER_CLIENT", default=8, minimum=0)
# Delay before each attempt, in seconds (comma-separated); its length is the number of attempts.
WEBHOOK_RETRY_SCHEDULE = [
    int(value)
    for value in env.list(
        "WEBHOOK_RETRY_SCHEDULE", default=["0", "5", "300", "1800", "7200", "18000", "36000", "36000"]
    )
]
if not WEBHOOK_RETRY_SCHEDULE or min(WEBHOOK_RETRY_SCHEDULE) < 0:
    raise ImproperlyConfigured("WEBHOOK_RETRY_SCHEDULE must list at least one delay >= 0 seconds.")
# Internal networks callback URLs may reach (comma-separated CIDRs); empty: public addresses only.
WEBHOOK_ALLOWED_NETWORKS = env.list("WEBHOOK_ALLOWED_NETWORKS", default=[])
try:
    for _network in WEBHOOK_ALLOWED_NETWORKS:
        ipaddress.ip_network(_network, strict=False)
except ValueError as _exc:
    raise ImproperlyConfigured(f"WEBHOOK_ALLOWED_NETWORKS: {_exc}") from None
# Seconds a submission (or an endpoint's creation or change) may wait, in all, for its callback
# URLs' host names to resolve; a name not resolved by then is refused (400 invalid_callback_url).
CALLBACK_RESOLVE_SECONDS = env.float("CALLBACK_RESOLVE_SECONDS", default=5.0, above=0)
# Requests of one client that may wait for callback host names at once in one API process, each
# holding a thread while it does; as many more wait up to a second for a place (an ordinary burst
# is served whole), past that 429 too_many_callback_lookups (a hung name server of one client's
# holds twice this many threads, not every one). 8: as many of its lookups as run at once.
CALLBACK_RESOLVE_MAX_PER_CLIENT = env.int("CALLBACK_RESOLVE_MAX_PER_CLIENT", default=8, minimum=1)
# Longest Retry-After (seconds) a receiver's 429/503 can impose before the next attempt.
WEBHOOK_RETRY_AFTER_MAX_SECONDS = env.int("WEBHOOK_RETRY_AFTER_MAX_SECONDS", default=3600, minimum=0)
# After a secret rotation, how long (seconds) deliveries also carry the old secret's signature;
# at most a century: past year 9999, where Python's datetimes end, every rotation failed (500).
WEBHOOK_SECRET_OVERLAP_SECONDS = env.int(
    "WEBHOOK_SECRET_OVERLAP_SECONDS", default=24 * 3600, minimum=0, maximum=CENTURY_SECONDS
)

# Registered webhook endpoints a client may have.
WEBHOOK_MAX_ENDPOINTS_PER_CLIENT = env.int("WEBHOOK_MAX_ENDPOINTS_PER_CLIENT", default=20, minimum=0)
# Deliveries a paced endpoint may have waiting for its slots before its client's submissions
# that would add to them are refused (429 webhook_backlog_full; 0: no bound).
WEBHOOK_MAX_BACKLOG_PER_ENDPOINT = env.int("WEBHOOK_MAX_BACKLOG_PER_ENDPOINT", default=10_000, minimum=0)
# An endpoint is disabled once every attempt to it has failed for this long (seconds) and at
# least this many times (its pending deliveries are held until its client enables it).
WEBHOOK_ENDPOINT_DISABLE_AFTER_SECONDS = env.int(
    "WEBHOOK_ENDPOINT_DISABLE_AFTER_SECONDS", default=5 * 24 * 3600, minimum=0, maximum=CENTURY_SECONDS
)
WEBHOOK_ENDPOINT_DISABLE_AFTER_FAILURES = env.int("WEBHOOK_ENDPOINT_DISABLE_AFTER_FAILURES", default=50, minimum=1)
# Seconds a process trusts what it read of a client's endpoints and their subscriptions (so a
# new endpoint gets the events recorded from at most this long after its creation).
WEBHOOK_ENDPOINT_CACHE_SECONDS = env.float("WEBHOOK_ENDPOINT_CACHE_SECONDS", default=5.0, minimum=0)
