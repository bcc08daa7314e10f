"""Which callback URLs a client may give: the private-network guard, as a 400 for the API.

A request's callback host names are resolved before its URLs are checked: each name once (a
batch naming one host a thousand times looks it up once), all of them within one budget,
CALLBACK_RESOLVE_SECONDS, on the resolver pool (core/deadlines.py: getaddrinfo cannot be
interrupted). A name that has not resolved by then is refused like any other bad callback URL.
While the lookups wait, the request gives its turn back (core/concurrency.py): a slow name server
must not hold every other request of the process. And they queue behind the same client's
lookups only (core/deadlines.py): lookups a hung name server keeps outlive their requests, and
must not make another client's names time out. A request that waits keeps its thread, though,
or a client naming hosts its own name server never answers for held every thread: one client's
may look up at once CALLBACK_RESOLVE_MAX_PER_CLIENT in a process, as many more may wait up to
PLACE_WAIT_SECONDS for one of those places, and past that they are refused (429). A name server
that answers frees a place within a moment, so an ordinary burst is served whole; a hung one
costs its client twice the places in threads, no more.
"""
from __future__ import annotations

import math
import threading
import time
from collections.abc import Hashable, Iterable, Iterator, Sequence
from concurrent.futures import Future, wait
from contextlib import contextmanager

from django.conf import settings

from core import deadlines, http
from core.concurrency import turn_released
from core.errors import ApplicationError, TooManyRequests

# How long lookups may wait holding the turn: a resolver answering from its cache answers well
# within it, and giving the turn away for that would queue the request behind another one.
HELD_SECONDS = 0.01

# How long a request waits for one of its client's places when they are all taken, before it is
# refused: the places free as lookups end, within a tenth of a second for a name server that
# answers (a burst of 16 submissions at 100 ms a name was answered whole in 0.45 s), so a wait
# past a second is a name server that hangs. The refusal's Retry-After: by then a place of those
# waiting is free.
PLACE_WAIT_SECONDS = 1.0

# Requests looking up callback host names now, and those waiting for a place to, by client (the
# key): in this process only, as the threads they hold are this process's.
_looking_up: dict[Hashable, int] = {}
_waiting: dict[Hashable, int] = {}
_places = threading.Condition()


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
    held while it waits (none `needed`: no name to look up, or no client to count it for). When
    they are all taken the request waits for one, up to PLACE_WAIT_SECONDS, if no more of the
    client's than there are places wait already; otherwise, or if none frees, 429
    too_many_callback_lookups. One a request, however many names it looks up: what a client
    holds is the request's thread."""
    if not needed or key is None:
        yield
        return
    limit = settings.CALLBACK_RESOLVE_MAX_PER_CLIENT
    with _places:
        taken = _looking_up.get(key, 0) < limit
        if not taken and _waiting.get(key, 0) >= limit:
            raise _too_many_lookups(limit)
        _counted(_looking_up if taken else _waiting, key, 1)
    if not taken and not _place_awaited(key, limit):
        raise _too_many_lookups(limit)
    try:
        yield
    finally:
        with _places:
            _counted(_looking_up, key, -1)
            _places.notify_all()


def _place_awaited(key: Hashable, limit: int) -> bool:
    """Whether one of `key`'s places came free within PLACE_WAIT_SECONDS (then it is taken),
    waited for with the request's turn given back, as lookups are."""
    with turn_released(), _places:
        taken = _places.wait_for(lambda: _looking_up.get(key, 0) < limit, PLACE_WAIT_SECONDS)
        _counted(_waiting, key, -1)
        if taken:
            _counted(_looking_up, key, 1)
    return taken


def _counted(counts: dict[Hashable, int], key: Hashable, change: int) -> None:
    """Add `change` to `key`'s count (held under _places), dropping it at 0."""
    counts[key] = counts.get(key, 0) + change
    if not counts[key]:
        del counts[key]


def _too_many_lookups(limit: int) -> TooManyRequests:
    return TooManyRequests(
        f"Too many of your requests are waiting for their callback host names to resolve on this server: one "
        f"client may have {limit} looking up at once and {limit} more waiting {PLACE_WAIT_SECONDS:g} s for a "
        "place; retry once some are answered.",
        code="too_many_callback_lookups", details={"limit": limit},
        headers={"Retry-After": str(math.ceil(PLACE_WAIT_SECONDS))},
    )


def _lookups_wait(lookups: list[Future[Sequence[str]]], seconds: float) -> None:
    """Wait for `lookups` at most `seconds` in all, past HELD_SECONDS with the request's turn
    given back; cancel those not started by then."""
    if not lookups:
        return
    started = time.monotonic()
    _, pending = wait(lookups, timeout=min(seconds, HELD_SECONDS))
    if pending:
        with turn_released():
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
