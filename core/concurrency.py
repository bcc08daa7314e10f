"""How many requests of a process run at once: WEB_ACTIVE_REQUESTS, whatever its thread count.

gunicorn's threaded workers give each process many threads so that waiting requests (`Prefer:
wait`, event streams) can each block one cheaply. The short requests should still run as a sync
worker runs them, one at a time per process: threads taking turns on the GIL mid-request only
add latency, and each would pin a database connection of its own. So every request holds one
of the process's WEB_ACTIVE_REQUESTS turns, and a request gives its turn back while it waits.
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from django.conf import settings
from django.http import HttpRequest, HttpResponse

_turns: threading.Semaphore | None = None
_made = threading.Lock()
_held = threading.local()


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
