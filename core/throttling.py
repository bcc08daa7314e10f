"""Request rate limits: every API request per client, by scope, and the failed admin logins and
API key checks per client address (the admin's per username and all together are
core/admin_login.py's), through the shared limiter of core/ratelimit.py (Redis), or DRF's own
history in the cache when there is no Redis (embedded mode).

Scopes, each with its own budget (settings `API_*_RATE_PER_MINUTE`): `submit` (new jobs),
`read` (every GET), `write` (other writes) and `sensitive` (redeliveries and secret rotations,
kept tight); a client's own submit and read rates, where the operator set them in the admin
(core/limits.py), replace the settings' for it. A view names the scope of a method that is not
the default for it in `throttle_scopes`, e.g. `{"POST": "submit"}`, and how much a request
spends in `throttle_weight(request)` (a batch: its jobs).

The answer to an authenticated API request tells its client the budget of its scope, in the
IETF HTTPAPI fields (draft-ietf-httpapi-ratelimit-headers): `RateLimit-Policy: "read";q=6000;w=60`
and `RateLimit: "read";r=5999;t=60`, from the counts the decision read anyway (docs/api.md).
"""
from __future__ import annotations

import ipaddress
import re
import unicodedata
from collections.abc import Callable
from typing import Any

import redis
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.http import HttpRequest, HttpResponseBase
from rest_framework.request import Request
from rest_framework.throttling import SimpleRateThrottle

from core import cache_redis
from core.limits import Limit, client_limit
from core.ratelimit import Budget, RateLimiter, ceiling_seconds

# Scope -> the setting with its requests per client per minute.
SCOPE_RATES = {
    "submit": "API_SUBMIT_RATE_PER_MINUTE",
    "read": "API_READ_RATE_PER_MINUTE",
    "write": "API_WRITE_RATE_PER_MINUTE",
    "sensitive": "API_SENSITIVE_RATE_PER_MINUTE",
}
# Scope -> the Client field that overrides its rate for that client.
SCOPE_OVERRIDES: dict[str, Limit] = {"submit": "submit_rate_per_minute", "read": "read_rate_per_minute"}
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
    budget: Budget  # what the last `allow_request` that counted decided, and the budget it left

    def get_rate(self) -> str | None:
        return None  # per request: rate_for

    def rate_for(self, request: HttpRequest, view: Any) -> str | None:
        raise NotImplementedError

    def weight(self, request: HttpRequest, view: Any) -> int:
        """How much of the budget the request spends: a view's `throttle_weight(request)`, or 1."""
        weigh = getattr(view, "throttle_weight", None)
        return weigh(request) if weigh is not None else 1

    def allow_request(self, request: HttpRequest, view: Any) -> bool:
        self.key = None
        self.rate = self.rate_for(request, view)
        if self.rate is None:
            return True
        self.num_requests, self.duration = self.parse_rate(self.rate)
        self.key = self.get_cache_key(request, view)
        if self.key is None:
            return True
        weight = self.weight(request, view)
        self.now = self.timer()
        if not cache_redis.configured():
            return self._allow_in_cache(weight)
        self.budget = limiter().take(
            self.key, limit=self.num_requests, window_seconds=self.duration, weight=weight, exact=self.exact,
            at=self.now,
        )
        self._wait_seconds = self.budget.wait
        return self._wait_seconds is None or self.throttle_failure()  # DRF's hook on a refusal

    def _allow_in_cache(self, weight: int) -> bool:
        """DRF's own history in the cache (embedded mode: a file cache the processes share)."""
        self.history = self.cache.get(self.key, [])
        while self.history and self.history[-1] <= self.now - self.duration:
            self.history.pop()
        allowed = len(self.history) + weight <= self.num_requests
        wait = None
        if allowed:
            self.history[:0] = [self.now] * weight
            self.cache.set(self.key, self.history, self.duration)
        elif weight > self.num_requests:
            wait = self.duration  # it never fits: a whole window, as the limiter answers
        else:
            # Until enough of the oldest leave for all of it to fit. DRF's `wait` spread the window
            # over the places left: too early for a batch, which was refused again then.
            wait = self.history[self.num_requests - len(self.history) - weight] + self.duration - self.now
        # The oldest request in the history leaves it first, and one more fits.
        oldest = self.history[-1] if self.history else self.now
        self.budget = Budget(wait, max(0, self.num_requests - len(self.history)), oldest + self.duration - self.now)
        self._wait_seconds = wait
        return allowed or self.throttle_failure()

    def wait(self) -> float | None:
        if hasattr(self, "_wait_seconds"):
            return self._wait_seconds
        return super().wait()


def _per_minute(rate: int) -> str | None:
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
        override = SCOPE_OVERRIDES.get(self.scope)
        if override is None:
            return _per_minute(getattr(settings, SCOPE_RATES[self.scope]))
        # The client as its key's check loaded it: its overrides cost no query.
        return _per_minute(client_limit(client=request.user, limit=override))  # type: ignore[arg-type]

    def get_cache_key(self, request: HttpRequest, view: Any) -> str | None:
        return f"throttle:{self.scope}:{request.user.pk}"  # type: ignore[union-attr]

    def allow_request(self, request: HttpRequest, view: Any) -> bool:
        allowed = super().allow_request(request, view)
        if self.key is not None:
            # On the Django request, which RateLimitFieldsMiddleware sees; DRF's Request keeps
            # its attributes to itself.
            django_request = getattr(request, "_request", request)
            django_request.rate_limit_fields = self.rate_limit_fields(allowed)  # type: ignore[attr-defined]
        return allowed

    def rate_limit_fields(self, allowed: bool) -> dict[str, str]:
        """The scope's policy and the budget it has left, as the draft writes them."""
        reset = self.budget.reset_seconds
        if not allowed:
            # Never past the 429's Retry-After, which must not be earlier (the draft's rule).
            reset = min(reset, self.wait() or reset)
        return {
            "RateLimit-Policy": f'"{self.scope}";q={self.num_requests};w={self.duration}',
            "RateLimit": f'"{self.scope}";r={self.budget.remaining};t={ceiling_seconds(reset)}',
        }


class RateLimitFieldsMiddleware:
    """Puts on an answer the RateLimit-Policy and RateLimit fields that ClientRateThrottle left
    on its request: on the answers of authenticated API requests, their 429 included; none on
    another's (no key, a key refused, or answered before its budget was counted)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        response = self.get_response(request)
        fields: dict[str, str] | None = getattr(request, "rate_limit_fields", None)
        if fields is not None:
            for name, value in fields.items():
                response[name] = value
        return response


class FailureRateThrottle(RateThrottle):
    """Failed attempts per client address (`client_address`, an IPv6 one by its /64), in the
    budget its subclass's setting (`rate_setting`) gives a minute; always decided by Redis.

    An attempt takes its place in its address's budget before it is checked, atomically across
    processes, so that concurrent guesses cannot all pass a check made before any of them had
    failed; one that succeeds gives its place back (`give_back`). So only failures spend the
    budget, and legitimate attempts never do."""

    exact = True
    rate_setting: str

    def rate_for(self, request: HttpRequest, view: Any) -> str | None:
        return _per_minute(getattr(settings, self.rate_setting))

    def get_cache_key(self, request: HttpRequest, view: Any) -> str | None:
        return f"throttle:{self.scope}:{address_holder(client_address(request))}"

    def give_back(self) -> None:
        """The attempt `allow_request` admitted succeeded: its place is given back."""
        if self.key is None:
            return  # nothing was counted (not an attempt, or no limit)
        if cache_redis.configured():
            limiter().give_back(self.key, window_seconds=self.duration, at=self.now)
            return
        history = self.cache.get(self.key, [])
        if self.now in history:
            history.remove(self.now)
            self.cache.set(self.key, history, self.duration)


class AdminLoginRateThrottle(FailureRateThrottle):
    """Failed logins to the admin (its POSTs) per client address (ADMIN_LOGIN_RATE_PER_MINUTE)."""

    scope = "admin_login"
    rate_setting = "ADMIN_LOGIN_RATE_PER_MINUTE"

    def rate_for(self, request: HttpRequest, view: Any) -> str | None:
        return super().rate_for(request, view) if request.method == "POST" else None


def login_username(username: str) -> str:
    """A username as the admin's failed logins are counted by and its device cookie names it
    (core/admin_login.py): stripped and NFKC-normalised, as the login form takes it (every
    spelling it signs in as one user counted as one: `ａdmin` is `admin`), and case folded.
    Empty for one longer than the form takes, which it refuses unchecked: normalised, a POST of
    a megabyte of `ﷺ` (18 characters each) cost 0.7 s of CPU."""
    username, user_model = username.strip(), get_user_model()
    if len(username) > (user_model._meta.get_field(user_model.USERNAME_FIELD).max_length or 254):
        return ""
    return unicodedata.normalize("NFKC", username).casefold()


class ApiKeyFailureRateThrottle(FailureRateThrottle):
    """API requests with an unknown, revoked or malformed key per client address
    (API_AUTH_FAILURE_RATE_PER_MINUTE): core/auth.py asks it before it looks a key up."""

    scope = "api_key_failure"
    rate_setting = "API_AUTH_FAILURE_RATE_PER_MINUTE"


def client_address(request: HttpRequest) -> str:
    """The address of the client that sent `request`. Its peer's (REMOTE_ADDR), unless the peer is
    one of the trusted proxies (FORWARDED_ALLOW_IPS, as gunicorn reads it): then X-Forwarded-For,
    where each proxy appended the address it was reached from, is read from the right, past the
    trusted proxies, to the first address that is not one. The entries left of it are whatever
    the client sent, never believed: a client would name a new address at each attempt to escape
    its limit. With `*` the peer is trusted but no entry can be told apart from a client, so the
    last one is the client's."""
    peer = request.META.get("REMOTE_ADDR", "")
    proxies = settings.FORWARDED_ALLOW_IPS
    # No address: a UNIX socket, which only this machine reaches; gunicorn trusts it too.
    if peer and not _is_proxy(peer, proxies):
        return peer
    forwarded = [_without_port(entry.strip()) for entry in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")]
    forwarded = [entry for entry in forwarded if entry]
    if not forwarded:
        return peer
    if "*" in proxies:
        return forwarded[-1]
    for entry in reversed(forwarded):
        if not _is_proxy(entry, proxies):
            return entry
    return forwarded[0]  # every entry a trusted address: the one the first proxy was reached from


# An X-Forwarded-For entry with the port its proxy was reached from: `203.0.113.9:41234`, or
# `[2001:db8::1]:41234`, as Azure's Application Gateway and IIS's ARR write it.
_ADDRESS_AND_PORT = re.compile(r"\A(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<v4>[0-9.]+))(?::[0-9]{1,5})?\Z")


def _without_port(entry: str) -> str:
    """An X-Forwarded-For entry's address without its port: with it, each of a client's
    connections (each from a port of its own) was another address, with a budget of its own."""
    found = _ADDRESS_AND_PORT.match(entry)
    return (found["v6"] or found["v4"]) if found else entry


def _is_proxy(address: str, proxies: list[str]) -> bool:
    if "*" in proxies:
        return True
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    candidates = [ip]
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        # A server listening on IPv6 too (HOST=[::]) sees an IPv4 proxy as ::ffff:<its address>:
        # compared as that, a proxy given as 127.0.0.1 was not one, and every client behind it
        # had its address, one budget of failed checks (one client's guesses locked out every
        # other client's new keys, and every operator's admin login). Both forms name it: gunicorn
        # compares the address as it is, so an operator lists ::ffff:127.0.0.1 for gunicorn's
        # own trust, and an IPv4 address is never within an IPv6 network.
        candidates.append(ip.ipv4_mapped)
    return any(candidate in ipaddress.ip_network(proxy) for proxy in proxies for candidate in candidates)


def address_holder(address: str) -> str:
    """Who an address stands for, in the budgets of failed checks and in the request turns of
    requests without a known key (core/concurrency.py): an IPv6 address's /64, since one machine
    is commonly given a whole /64 and could take a new address in it for each attempt; any other
    address itself."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)
