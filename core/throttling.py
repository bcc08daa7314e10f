"""Request rate limits: every API request per client, by scope, and the admin's login per address,
through the shared limiter of core/ratelimit.py (Redis), or DRF's own history in the cache when
there is no Redis (embedded mode).

Scopes, each with its own budget (settings `API_*_RATE_PER_MINUTE`): `submit` (new jobs),
`read` (every GET), `write` (other writes) and `sensitive` (redeliveries and secret rotations,
kept tight). A view names the scope of a method that is not the default for it in
`throttle_scopes`, e.g. `{"POST": "submit"}`, and how much a request spends in
`throttle_weight(request)` (a batch: its jobs).
"""
from __future__ import annotations

from typing import Any

import redis
from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest
from rest_framework.request import Request
from rest_framework.throttling import SimpleRateThrottle

from core import cache_redis
from core.ratelimit import RateLimiter

# Scope -> the setting with its requests per client per minute.
SCOPE_RATES = {
    "submit": "API_SUBMIT_RATE_PER_MINUTE",
    "read": "API_READ_RATE_PER_MINUTE",
    "write": "API_WRITE_RATE_PER_MINUTE",
    "sensitive": "API_SENSITIVE_RATE_PER_MINUTE",
}
_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

_limiter: RateLimiter | None = None
_client: redis.Redis | None = None


def _redis() -> redis.Redis:
    """This process's connection to the limiter's Redis, made on first use. Making it connects,
    so it raises while Redis is unreachable; the limiter calls it where it admits on its own
    counts when Redis fails, and the next call tries again."""
    global _client
    if _client is None:
        # One connection, held: no pool to take it from and check before each use; redis-py
        # locks it between threads.
        _client = cache_redis.client(single_connection_client=True)
    return _client


def limiter() -> RateLimiter:
    """This process's limiter (made in the process that serves, not before a fork)."""
    global _limiter
    if _limiter is None:
        _limiter = RateLimiter(_redis, sync_seconds=settings.API_RATE_SYNC_SECONDS, prefix=cache.make_key(""))
    return _limiter


class RateThrottle(SimpleRateThrottle):
    """DRF's throttle interface (429 with Retry-After, through core.errors) on the shared
    limiter. Subclasses say which rate applies to a request (`rate_for`) and whose budget it
    spends (`get_cache_key`)."""

    exact = False

    def get_rate(self) -> str | None:
        return None  # per request: rate_for

    def rate_for(self, request: HttpRequest, view: Any) -> str | None:
        raise NotImplementedError

    def weight(self, request: HttpRequest, view: Any) -> int:
        """How much of the budget the request spends: a view's `throttle_weight(request)`, or 1."""
        weigh = getattr(view, "throttle_weight", None)
        return weigh(request) if weigh is not None else 1

    def allow_request(self, request: HttpRequest, view: Any) -> bool:
        self.rate = self.rate_for(request, view)
        if self.rate is None:
            return True
        self.num_requests, self.duration = self.parse_rate(self.rate)
        self.key = self.get_cache_key(request, view)
        if self.key is None:
            return True
        weight = self.weight(request, view)
        if not cache_redis.configured():
            return self._allow_in_cache(weight)
        self._wait_seconds = limiter().hit(
            self.key, limit=self.num_requests, window_seconds=self.duration, weight=weight, exact=self.exact
        )
        return self._wait_seconds is None

    def _allow_in_cache(self, weight: int) -> bool:
        """DRF's own history in the cache (embedded mode: a file cache the processes share)."""
        self.history = self.cache.get(self.key, [])
        self.now = self.timer()
        while self.history and self.history[-1] <= self.now - self.duration:
            self.history.pop()
        if len(self.history) + weight > self.num_requests:
            return self.throttle_failure()
        self.history[:0] = [self.now] * weight
        self.cache.set(self.key, self.history, self.duration)
        return True

    def wait(self) -> float | None:
        if hasattr(self, "_wait_seconds"):
            return self._wait_seconds
        return super().wait()


def _per_minute(setting: str) -> str | None:
    rate = getattr(settings, setting)
    return f"{rate}/min" if rate else None


class ClientRateThrottle(RateThrottle):
    """Every API request of an authenticated client, in its scope's budget."""

    @staticmethod
    def scope_of(request: Request, view: Any) -> str:
        scopes: dict[str, str] = getattr(view, "throttle_scopes", {})
        return scopes.get(request.method or "", "read" if request.method in _READ_METHODS else "write")

    def rate_for(self, request: HttpRequest, view: Any) -> str | None:
        if getattr(request, "user", None) is None:
            return None  # not authenticated: answered 401 before any budget is spent
        self.scope = self.scope_of(request, view)  # type: ignore[arg-type]
        return _per_minute(SCOPE_RATES[self.scope])

    def get_cache_key(self, request: HttpRequest, view: Any) -> str | None:
        return f"throttle:{self.scope}:{request.user.pk}"  # type: ignore[union-attr]


class AdminLoginRateThrottle(RateThrottle):
    """Login attempts (POSTs) to the admin, per client address; always decided by Redis."""

    scope = "admin_login"
    exact = True

    def rate_for(self, request: HttpRequest, view: Any) -> str | None:
        return _per_minute("ADMIN_LOGIN_RATE_PER_MINUTE") if request.method == "POST" else None

    def get_cache_key(self, request: HttpRequest, view: Any) -> str | None:
        return f"throttle:{self.scope}:{request.META.get('REMOTE_ADDR', '')}"
