"""Bearer API-key authentication: one indexed lookup, remembered for a few seconds per process;
failed checks limited per client address."""
from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager

from django.conf import settings
from django.core.exceptions import ObjectDoesNotExist
from django.db import IntegrityError
from django.http import HttpRequest
from rest_framework import authentication, exceptions
from rest_framework.request import Request

from core import logs
from core.errors import FailedAuthenticationsThrottled
from core.models import ApiKey, Client
from core.throttling import ApiKeyFailureRateThrottle

API_KEY_PREFIX = "jak_"
_UNKNOWN_KEY = "Unknown or revoked API key."

# Keys that authenticated in this process: digest -> (checked at, monotonic seconds; the key
# with its client). A poll then costs one database round trip (the job), not two
# (docs/benchmarks.md). Only valid keys are remembered: a new key works at once, and guessing
# keys fills nothing. A revocation is seen at once by the process that made it (api_key_revoke
# forgets the key) and within API_KEY_CACHE_SECONDS by every other process. A key found here
# is looked up again once that long has passed (at every request with 0), but it is never held
# to its address's budget of failed checks (API_AUTH_FAILURE_RATE_PER_MINUTE) nor costs a Redis
# round trip: it was valid, so a client sharing an address with someone guessing keys keeps
# working, and a valid key's request costs what it did before the limit.
_checked: OrderedDict[str, tuple[float, ApiKey]] = OrderedDict()
# Bounds the memory one process spends on it. The least recently used key goes first (a hit moves
# its key to the end), so past this many keys one in constant use stays remembered while idle
# ones go, rather than being looked up again for being the oldest remembered.
_CHECKED_MAX_ENTRIES = 10_000


def api_key_digest(key: str) -> str:
    """The stored form of a key: its hex SHA-256."""
    return hashlib.sha256(key.encode()).hexdigest()


def api_key_forget(*, digest: str) -> None:
    """Drop a remembered key check (on revocation)."""
    _checked.pop(digest, None)


def _bearer_key(header: str) -> str | None:
    """The key of an `Authorization: Bearer <key>` header; None for any other header."""
    scheme, _, key = header.partition(" ")
    key = key.strip()
    return key if scheme.lower() == ApiKeyAuthentication.keyword.lower() and key else None


def known_client_id(request: HttpRequest) -> str | None:
    """The client of the key `request` sends, if this process has found that key valid (however
    long ago: a key revoked elsewhere since is refused when authenticated), without a query; else
    None. For placing a request before it is authenticated (core/concurrency.py `turn_key`)."""
    key = _bearer_key(request.META.get("HTTP_AUTHORIZATION", ""))
    hit = None if key is None else _checked.get(api_key_digest(key))
    return None if hit is None else str(hit[1].client_id)


def _api_key_lookup(digest: str) -> ApiKey | None:
    now = time.monotonic()
    hit = _checked.get(digest)
    if hit is not None and now - hit[0] < settings.API_KEY_CACHE_SECONDS:
        try:
            _checked.move_to_end(digest)
        except KeyError:  # forgotten by another thread meanwhile (a revocation): stays forgotten
            pass
        return hit[1]
    api_key = ApiKey.objects.select_related("client").filter(digest=digest, revoked_at__isnull=True).first()
    # Taken out either way: a valid key goes back in last, as the most recently used.
    _checked.pop(digest, None)
    if api_key is not None:
        while len(_checked) >= _CHECKED_MAX_ENTRIES:
            try:
                _checked.popitem(last=False)
            except KeyError:  # emptied by another thread
                break
        _checked[digest] = (now, api_key)
    return api_key


def api_key_in_force(*, digest: str) -> bool:
    """Whether the key of `digest` still authenticates (not revoked nor deleted): asked again as
    it goes by a request that outlives its check (an event stream, which never ends on its own),
    so that revoking a leaked key cuts off its streams too, within API_KEY_CACHE_SECONDS as it
    does its requests. Answered as a request's check is, from what the process remembers: a
    query per key at most once in that time, whatever number of streams ask."""
    return _api_key_lookup(digest) is not None


@contextmanager
def client_writes(request: Request) -> Iterator[None]:
    """Around a write of the request's client (a submission, an endpoint's creation, its signing
    secret's first use or rotation), or a read of a row it always has (its limits' counts): a
    client deleted by another process (the admin) while this one still remembers its key
    (API_KEY_CACHE_SECONDS) is refused as an unknown key would be, and its key forgotten, rather
    than answered 500 when its rows fail their foreign key (or find its own rows gone). Asked
    only once a write failed: a write that succeeds costs nothing more. (A request naming one of
    its rows, an endpoint or a job, finds it gone with it: 404, as for another client's.)"""
    try:
        yield
    except (IntegrityError, ObjectDoesNotExist):
        api_key = request.auth
        if not isinstance(api_key, ApiKey) or Client.objects.filter(pk=api_key.client_id).exists():
            raise
        api_key_forget(digest=api_key.digest)
        raise exceptions.AuthenticationFailed(_UNKNOWN_KEY) from None


def _attempt_admitted(request: Request) -> ApiKeyFailureRateThrottle:
    """The attempt's place in its address's budget of failed checks, taken before its key is
    looked up (a success gives it back); 429 once the budget is spent, without asking the
    database, so that guesses stop costing it a query."""
    throttle = ApiKeyFailureRateThrottle()
    if not throttle.allow_request(request, None):
        raise FailedAuthenticationsThrottled(wait=throttle.wait())
    return throttle


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """`Authorization: Bearer <key>`; request.user becomes the key's Client."""

    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[Client, ApiKey] | None:
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if not header:
            # 401: it tries no key and costs no query, so it spends nothing of its address's budget.
            return None
        key = _bearer_key(header)
        if key is None:
            _attempt_admitted(request)
            raise exceptions.AuthenticationFailed("Send the API key as 'Authorization: Bearer <key>'.")
        digest = api_key_digest(key)
        if digest in _checked:
            # Valid when last looked up. Revoked since, it is refused (and forgotten) with a query
            # its address does not pay for: once a key, after which it is a stranger.
            api_key = _api_key_lookup(digest)
        else:
            attempt = _attempt_admitted(request)
            api_key = _api_key_lookup(digest)
            if api_key is not None:
                attempt.give_back()
        if api_key is None:
            raise exceptions.AuthenticationFailed(_UNKNOWN_KEY)
        logs.bind(client=str(api_key.client_id))  # the request's lines, and its tasks', name the client
        return api_key.client, api_key

    def authenticate_header(self, request: Request) -> str:
        # Makes DRF answer 401 (with WWW-Authenticate) rather than 403 to a request without a key.
        return self.keyword
