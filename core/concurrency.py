"""How many requests of a process run at once: WEB_ACTIVE_REQUESTS, whatever its thread count.

gunicorn's threaded workers give each process many threads so that waiting requests (`Prefer:
wait`, event streams) can each block one cheaply. The short requests should still run as a sync
worker runs them, one at a time per process: threads taking turns on the GIL mid-request only
add latency, and each would pin a database connection of its own. So every request holds one
of the process's WEB_ACTIVE_REQUESTS turns, and a request gives its turn back while it waits.

Django's database connections belong to threads, and any of a process's threads may serve the
next request: left alone, a process that once had 200 threads busy would end up holding 200
persistent connections (PostgreSQL allows 100 in all). So a process keeps at most its turns plus
CONNECTIONS_BEYOND_TURNS open; a thread finishing a request (or starting to wait) past that closes
its own.
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.http import HttpRequest, HttpResponse

# Open database connections a process keeps beyond one per turn: the few waiters that keep theirs
# (a new connection costs a woken waiter ~4 ms) and threads between requests.
CONNECTIONS_BEYOND_TURNS = 8

_turns: threading.Semaphore | None = None
_made = threading.Lock()
_held = threading.local()
# thread ident -> its connection wrapper, for counting the process's open connections.
_wrappers: dict[int, BaseDatabaseWrapper] = {}


def _semaphore() -> threading.Semaphore | None:
    global _turns
    if _turns is None and settings.WEB_ACTIVE_REQUESTS:
        with _made:
            if _turns is None:
                _turns = threading.Semaphore(settings.WEB_ACTIVE_REQUESTS)
    return _turns


class ActiveRequestsMiddleware:
    """Outermost: the whole request (the other middleware too) runs holding a turn."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        turns = _semaphore()
        if turns is None:
            return self.get_response(request)
        with turns:
            _held.value = True
            try:
                return self.get_response(request)
            finally:
                _held.value = False
                connections_trim()


def connections_trim() -> None:
    """Close this thread's database connection if the process holds more than its budget
    (WEB_ACTIVE_REQUESTS + CONNECTIONS_BEYOND_TURNS); the next query here opens one again."""
    if not settings.WEB_ACTIVE_REQUESTS:
        return
    wrapper = connections[DEFAULT_DB_ALIAS]
    ident = threading.get_ident()
    if wrapper.connection is None:
        _wrappers.pop(ident, None)
        return
    _wrappers[ident] = wrapper
    # Reading another thread's wrapper's attribute is safe; the count may be a moment stale.
    open_count = sum(1 for other in list(_wrappers.values()) if other.connection is not None)
    if open_count > settings.WEB_ACTIVE_REQUESTS + CONNECTIONS_BEYOND_TURNS and not wrapper.in_atomic_block:
        wrapper.close()
        _wrappers.pop(ident, None)


@contextmanager
def turn_released() -> Iterator[None]:
    """Give this request's turn to another request while the block waits (no-op outside one)."""
    turns = _semaphore()
    if turns is None or not getattr(_held, "value", False):
        yield
        return
    turns.release()
    _held.value = False
    try:
        yield
    finally:
        turns.acquire()
        _held.value = True
