"""Request rate limits: every API request per client, by scope, and the admin's login per address;
kept in Redis in one round trip, exact across API processes.

Scopes, each with its own budget (settings `API_*_RATE_PER_MINUTE`): `submit` (new jobs),
`read` (every GET), `write` (other writes) and `sensitive` (redeliveries and secret rotations,
kept tight). A view names the scope of a method that is not the default for it in
`throttle_scopes`, e.g. `{"POST": "submit"}`.
"""
from __future__ import annotations

import logging
import uuid
from typing import Any

import redis
from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest
from rest_framework.request import Request
from rest_framework.throttling import SimpleRateThrottle

# A sliding-window log in a sorted set, checked and updated in one atomic step: drop the
# entries older than the window, admit the request if its `weight` (1, or a batch's jobs) fits
# under `limit` with those left (adding one entry per unit), else answer how many milliseconds
# until enough have left the window. Redis's own clock keeps every API process on one time line.
_SLIDING_WINDOW = """
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local window_ms = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local weight = tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms - window_ms)
local count = redis.call('ZCARD', KEYS[1])
if count + weight <= limit then
  for i = 1, weight do
    redis.call('ZADD', KEYS[1], now_ms, now[1] .. now[2] .. ARGV[3] .. i)
  end
  redis.call('PEXPIRE', KEYS[1], window_ms)
  return -1
end
if weight > limit then
  return window_ms
end
local oldest = redis.call('ZRANGE', KEYS[1], count + weight - limit - 1, count + weight - limit - 1, 'WITHSCORES')
return math.max(1, tonumber(oldest[2]) + window_ms - now_ms)
"""
_script: Any = None
logger = logging.getLogger(__name__)

# Scope -> the setting with its requests per client per minute.
SCOPE_RATES = {
    "submit": "API_SUBMIT_RATE_PER_MINUTE",
    "read": "API_READ_RATE_PER_MINUTE",
    "write": "API_WRITE_RATE_PER_MINUTE",
    "sensitive": "API_SENSITIVE_RATE_PER_MINUTE",
}
_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _sliding_window_script() -> Any:
    global _script
    if _script is None:
        # Short timeouts: a hung Redis must not stall every request (it is admitted instead).
        # One connection, held: no pool to take it from and check before each script
        # (docs/benchmarks.md, "Fixes"); redis-py locks it between threads.
        client = redis.Redis.from_url(
            settings.CACHE_URL, socket_timeout=1, socket_connect_timeout=1, single_connection_client=True
        )
        _script = client.register_script(_SLIDING_WINDOW)
    return _script


class RedisRateThrottle(SimpleRateThrottle):
    """DRF's SimpleRateThrottle with the same rate strings and 429 + Retry-After, but one Redis
    round trip per request (EVALSHA) instead of a GET and a SET of the pickled history, and no
    lost update when two processes admit the same client at once. Falls back to DRF's own
    logic when the cache is not Redis (embedded mode). Subclasses say which rate applies to a
    request (`rate_for`) and whose budget it spends (`get_cache_key`)."""

    def get_rate(self) -> str | None:
        return None  # per request: rate_for

    def rate_for(self, request: HttpRequest, view: Any) -> str | None:
        raise NotImplementedError

    def allow_request(self, request: HttpRequest, view: Any) -> bool:
        self.rate = self.rate_for(request, view)
        if self.rate is None:
            return True
        self.num_requests, self.duration = self.parse_rate(self.rate)
        if not settings.CACHE_URL.startswith(("redis://", "rediss://", "unix://")):
            return self._allow_in_cache(request, view)
        key = self.get_cache_key(request, view)
        if key is None:
            return True
        self.key = key
        weight = self.weight(request, view)
        try:
            wait_ms = _sliding_window_script()(
                keys=[cache.make_key(key)],
                args=[int(self.duration * 1000), self.num_requests, uuid.uuid4().hex[:8], weight],
            )
        except redis.RedisError:
            # Redis down: admit rather than answer 500. A submission is kept in PostgreSQL and
            # published by the sweeper when the broker (the same Redis, usually) is back.
            logger.warning("Rate limit not checked: Redis unreachable", exc_info=True)
            return True
        self._wait_seconds = None if wait_ms < 0 else wait_ms / 1000
        return wait_ms < 0

    def weight(self, request: HttpRequest, view: Any) -> int:
        """How much of the budget the request spends: a view's `throttle_weight(request)`, or 1."""
        weigh = getattr(view, "throttle_weight", None)
        return weigh(request) if weigh is not None else 1

    def _allow_in_cache(self, request: HttpRequest, view: Any) -> bool:
        """DRF's own history in the cache (embedded mode, one process's view of it), weighted."""
        self.key = self.get_cache_key(request, view)
        if self.key is None:
            return True
        self.history = self.cache.get(self.key, [])
        self.now = self.timer()
        while self.history and self.history[-1] <= self.now - self.duration:
            self.history.pop()
        weight = self.weight(request, view)
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


class ClientRateThrottle(RedisRateThrottle):
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


class AdminLoginRateThrottle(RedisRateThrottle):
    """Login attempts (POSTs) to the admin, per client address."""

    scope = "admin_login"

    def rate_for(self, request: HttpRequest, view: Any) -> str | None:
        return _per_minute("ADMIN_LOGIN_RATE_PER_MINUTE") if request.method == "POST" else None

    def get_cache_key(self, request: HttpRequest, view: Any) -> str | None:
        return f"throttle:{self.scope}:{request.META.get('REMOTE_ADDR', '')}"
