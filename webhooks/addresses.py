"""Which callback URLs a client may give: the private-network guard, as a 400 for the API.

A request's callback host names are resolved before its URLs are checked: each name once (a
batch naming one host a thousand times looks it up once), all of them within one budget,
CALLBACK_RESOLVE_SECONDS, on the resolver pool (core/deadlines.py: getaddrinfo cannot be
interrupted). A name that has not resolved by then is refused like any other bad callback URL.
While the lookups wait, the request gives its turn back (core/concurrency.py): a slow name server
must not hold every other request of the process. And they queue behind the same client's
lookups only (core/deadlines.py): lookups a hung name server keeps outlive their requests, and
must not make another client's names time out. A request that waits keeps its thread, though:
one client's may wait at once CALLBACK_RESOLVE_MAX_PER_CLIENT in a process, past it refused at
once (429), or a client naming hosts its own name server never answers for held every thread.
"""
from __future__ import annotations

import math
import threading
import time
from collections.abc import Hashable, Iterable, Iterator, Sequence
from concurrent.futures import Future, wait
from contextlib import contextmanager, nullcontext

from django.conf import settings
from django.db import connection

from core import deadlines, http
from core.concurrency import turn_released
from core.errors import ApplicationError, TooManyRequests

# How long lookups may wait holding the turn: a resolver answering from its cache answers well
# within it, and giving the turn away for that would queue the request behind another one.
HELD_SECONDS = 0.01

# Requests looking up callback host names now, by client (the key): in this process only, as
# the threads they hold are this process's.
_looking_up: dict[Hashable, int] = {}
_looking_up_lock = threading.Lock()


def callback_hosts_resolve(
    urls: Iterable[str], *, resolver: http.Resolver | None = None, key: Hashable = None
) -> http.Resolver:
    """A resolver answering, for the host names of `urls`, what each resolved to within
    CALLBACK_RESOLVE_SECONDS, all looked up at once on behalf of `key` (the client's id)
    (TimeoutError for a name that had not answered by then). Only names of `urls` may be
    asked."""
    hosts: dict[str, int] = {}
    for url in urls:
        try:
            _, host, port, literal = http.url_parse(url)
        except http.UrlRefused:
            continue  # refused again, saying why, when it is checked
        if literal is None:
            hosts.setdefault(host, port)
    seconds = settings.CALLBACK_RESOLVE_SECONDS
    resolve = resolver or http.DEFAULT_RESOLVER
    with _place_taken(key, bool(hosts)):
        lookups = {host: deadlines.resolve_started(resolve, host, port, key=key) for host, port in hosts.items()}
        _lookups_wait(list(lookups.values()), seconds)

    def answer(host: str, port: int) -> Sequence[str]:
        lookup = lookups[host]
        if not lookup.done() or lookup.cancelled():
            raise TimeoutError(f"The host {host} did not resolve within {seconds:g} s.")
        return lookup.result()

    return answer


@contextmanager
def _place_taken(key: Hashable, needed: bool) -> Iterator[None]:
    """One of `key`'s CALLBACK_RESOLVE_MAX_PER_CLIENT places for a request waiting on lookups,
    held while it waits (none `needed`: no name to look up, or no client to count it for); 429
    too_many_callback_lookups when they are all taken. One a request, however many names it
    looks up: what a client holds is the request's thread."""
    if not needed or key is None:
        yield
        return
    limit = settings.CALLBACK_RESOLVE_MAX_PER_CLIENT
    with _looking_up_lock:
        if _looking_up.get(key, 0) >= limit:
            raise TooManyRequests(
                f"You have {limit} requests waiting for their callback host names to resolve on this server, the "
                "most one client may; retry once they are answered.",
                code="too_many_callback_lookups", details={"limit": limit},
                # By then each of those has its answer: every wait ends within the budget.
                headers={"Retry-After": str(math.ceil(settings.CALLBACK_RESOLVE_SECONDS))},
            )
        _looking_up[key] = _looking_up.get(key, 0) + 1
    try:
        yield
    finally:
        with _looking_up_lock:
            _looking_up[key] -= 1
            if not _looking_up[key]:
                del _looking_up[key]


def _lookups_wait(lookups: list[Future[Sequence[str]]], seconds: float) -> None:
    """Wait for `lookups` at most `seconds` in all, past HELD_SECONDS with the request's turn
    given back; cancel those not started by then."""
    if not lookups:
        return
    started = time.monotonic()
    _, pending = wait(lookups, timeout=min(seconds, HELD_SECONDS))
    if pending:
        # The turn's database connection goes with it: never from inside a transaction.
        released = nullcontext() if connection.in_atomic_block else turn_released()
        with released:
            _, pending = wait(pending, timeout=max(0.0, started + seconds - time.monotonic()))
    for lookup in pending:
        lookup.cancel()


def callback_url_validate(*, url: str, resolver: http.Resolver | None = None, key: Hashable = None) -> None:
    """Refuse (400) a callback URL that is malformed, reaches a non-public address, or whose
    host does not resolve within CALLBACK_RESOLVE_SECONDS. `resolver`: what
    callback_hosts_resolve made of the request's callback URLs (of this one URL by default,
    looked up on behalf of `key`, the client's id)."""
    try:
        http.url_check(url, resolver=resolver or callback_hosts_resolve([url], key=key))
    except http.UrlRefused as exc:
        raise _refused(exc.reason) from None
    except TimeoutError as exc:
        raise _refused(str(exc)) from None


def _refused(reason: str) -> ApplicationError:
    return ApplicationError(
        f"callback_url is not allowed: {reason}", code="invalid_callback_url", details={"callback_url": [reason]}
    )
