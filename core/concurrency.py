"""How many requests of a process run at once: WEB_ACTIVE_REQUESTS, whatever its thread count.

gunicorn's threaded workers give each process many threads so that waiting requests (`Prefer:
wait`, event streams) can each block one cheaply. The short requests should still run as a sync
worker runs them, one at a time per process: threads taking turns on the GIL mid-request only
add latency, and each would pin a database connection of its own. So every request holds one
of the process's WEB_ACTIVE_REQUESTS turns, and a request gives its turn back while it waits.

Django's database connections belong to threads, and any of a process's threads may serve the
next request: left alone, a process that once had 200 threads busy would end up holding 200
persistent connections (PostgreSQL allows 100 in all), and one that closed them would open a new
one for most requests (~20 ms each: the API at a fifth of its speed, measured). So the
connections go with the turns: a process keeps one connection per turn, and the request holding
a turn holds its connection (installed as the thread's `default` connection for the turn, checked
as Django checks a persistent one at a request's start). What runs outside a turn (a stream's
body, written after the view returned) uses the thread's own connection, and a process keeps at
most CONNECTIONS_BEYOND_TURNS of those open: a thread past that closes its own.

A request's body is read before it takes its turn, within WEB_BODY_READ_SECONDS
(core/request_body.py): a client sending its body slowly holds its own thread, never a turn.

The turns go round the clients waiting for one (FairTurns, `turn_key`), not first come first
served: one client with a dozen heavy requests queued (lists of 500 jobs) made another client's
poll wait behind all of them, from ~4 ms to ~650 ms; now behind at most one of them per turn.
"""
from __future__ import annotations

import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.http import HttpRequest, HttpResponse

from core.auth import known_client_id
from core.connections import connection_released, connection_reused
from core.request_body import read_body_in_time
from core.throttling import address_holder, client_address

# Open database connections a process keeps beyond one per turn: the few waiters that keep theirs
# (a new connection costs a woken waiter ~4 ms) and threads between requests.
CONNECTIONS_BEYOND_TURNS = 8



class FairTurns:
    """`count` turns, each taken by one request at a time and handed, when given back, to a
    request waiting for one: round robin between the keys (clients: `turn_key`) that have requests
    waiting, each key's own in the order they came. So a key with many requests queued gets a
    turn as often as a key with one, and each waits behind the others' one request at most."""

    def __init__(self, count: int) -> None:
        self._free = count
        self._lock = threading.Lock()
        # key -> its requests waiting (an event each, set when the turn is handed to it); the
        # next turn goes to the first key's oldest request.
        self._waiting: OrderedDict[str, deque[threading.Event]] = OrderedDict()

    def acquire(self, key: str) -> None:
        with self._lock:
            if self._free:
                self._free -= 1
                return
            handed = threading.Event()
            self._waiting.setdefault(key, deque()).append(handed)
        handed.wait()

    def release(self) -> None:
        with self._lock:
            if not self._waiting:
                self._free += 1
                return
            key, queue = next(iter(self._waiting.items()))
            handed = queue.popleft()
            if queue:
                self._waiting.move_to_end(key)  # its next request waits for the other keys'
            else:
                del self._waiting[key]
        handed.set()  # the turn goes to it as it is, never counted free in between

    def waiting(self) -> int:
        """How many requests wait for a turn."""
        with self._lock:
            return sum(len(queue) for queue in self._waiting.values())


_turns: FairTurns | None = None
_made = threading.Lock()
_held = threading.local()
# thread ident -> its own connection wrapper, for counting the process's open connections.
_wrappers: dict[int, BaseDatabaseWrapper] = {}
# The turns' connections not in use now; at most one per turn exists.
_idle_turn_connections: list[BaseDatabaseWrapper] = []
_turn_connections_lock = threading.Lock()


def _fair_turns() -> FairTurns | None:
    global _turns
    if _turns is None and settings.WEB_ACTIVE_REQUESTS:
        with _made:
            if _turns is None:
                _turns = FairTurns(settings.WEB_ACTIVE_REQUESTS)
    return _turns


class ActiveRequestsMiddleware:
    """Outermost but for the request's context (core/request_context.py, which times the wait
    for a turn too): the whole request (the other middleware too) runs holding a turn, its body
    read before it takes one."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        read_body_in_time(request)
        turns = _fair_turns()
        if turns is None:
            return self.get_response(request)
        key = turn_key(request)
        turns.acquire(key)
        _held.value, _held.key = True, key
        try:
            _turn_connection_take()
            try:
                return self.get_response(request)
            finally:
                _turn_connection_give_back()
                _held.value = False
                connections_trim()
        finally:
            turns.release()


def _turn_connection_take() -> None:
    """Make a turn's connection this thread's `default` one (closing the thread's own if open)."""
    if not settings.WEB_TURN_CONNECTIONS:
        return
    with _turn_connections_lock:
        wrapper = _idle_turn_connections.pop() if _idle_turn_connections else None
    if wrapper is None:
        wrapper = connections.create_connection(DEFAULT_DB_ALIAS)
        wrapper.inc_thread_sharing()  # it serves whichever thread holds the turn
    else:
        connection_reused(wrapper)  # too old, broken, or idle and gone: closed (core/connections.py)
    own = _own_connection()
    if own is not None and own.connection is not None:
        own.close()
        _wrappers.pop(threading.get_ident(), None)
    connections[DEFAULT_DB_ALIAS] = wrapper


def _own_connection() -> BaseDatabaseWrapper | None:
    """The thread's `default` connection wrapper if it has one: asking `connections` for it
    would build a new wrapper object (on every request, once a turn's is given back)."""
    return next((c for c in connections.all(initialized_only=True) if c.alias == DEFAULT_DB_ALIAS), None)


def _turn_connection_give_back() -> None:
    if not settings.WEB_TURN_CONNECTIONS:
        return
    wrapper = connections[DEFAULT_DB_ALIAS]
    del connections[DEFAULT_DB_ALIAS]  # the thread gets a fresh, unconnected one if it asks
    if wrapper.in_atomic_block:
        # An unfinished transaction (only a bug leaves one) must not reach the next request:
        # closed, and dropped, since Django leaves a wrapper closed mid-transaction marked as
        # inside it. The next turn to find no idle connection makes a new one.
        wrapper.close()
        return
    connection_released(wrapper)  # as Django does at a request's end (CONN_MAX_AGE)
    with _turn_connections_lock:
        _idle_turn_connections.append(wrapper)


def connections_trim() -> None:
    """Close this thread's own database connection if the process's threads hold more than
    CONNECTIONS_BEYOND_TURNS; the next query here opens one again."""
    if not settings.WEB_ACTIVE_REQUESTS:
        return
    if getattr(_held, "value", False) and settings.WEB_TURN_CONNECTIONS:
        return  # the turn's connection, kept for the next turn
    wrapper = _own_connection()
    ident = threading.get_ident()
    if wrapper is None or wrapper.connection is None:
        _wrappers.pop(ident, None)
        return
    _wrappers[ident] = wrapper
    # Reading another thread's wrapper's attribute is safe; the count may be a moment stale.
    open_count = sum(1 for other in list(_wrappers.values()) if other.connection is not None)
    budget = CONNECTIONS_BEYOND_TURNS + (0 if settings.WEB_TURN_CONNECTIONS else settings.WEB_ACTIVE_REQUESTS)
    if open_count > budget and not wrapper.in_atomic_block:
        wrapper.close()
        _wrappers.pop(ident, None)


def turn_key(request: HttpRequest) -> str:
    """Whose place a request waits in, before authentication has run: its client's, when it sends
    a key this process has found valid (so a client's keys share one place); otherwise its
    address's (core/throttling.py `client_address`), an IPv6 address's /64 (`address_holder`), so
    that requests without a key, or with keys made up one per request, do not each take a place of
    their own beside the clients', nor those from each address of a /64."""
    client_id = known_client_id(request)
    if client_id is not None:
        return f"client:{client_id}"
    return f"address:{address_holder(client_address(request))}"


@contextmanager
def turn_taken(key: str) -> Iterator[None]:
    """Hold one of the process's turns for the block, in `key`'s place among the requests
    waiting, from outside a request's (a stream's body reading and rendering what it sends next;
    it writes without one). No-op when turns are off or the thread holds one already.

    The thread's own connection, which the block's reads used, is trimmed as the turn ends
    (connections_trim), before the stream writes: a write blocks for as long as its client
    reads nothing, and trimmed only when it next waited for events, each stream of a client that
    never reads held a connection (20 such streams, 20 connections; PostgreSQL allows 100)."""
    turns = _fair_turns()
    if turns is None or getattr(_held, "value", False):
        yield
        return
    turns.acquire(key)
    try:
        yield
    finally:
        turns.release()
        connections_trim()


@contextmanager
def turn_released() -> Iterator[None]:
    """Give this request's turn to another request while the block waits (no-op outside one, and
    inside a transaction: the turn's database connection goes with the turn, and would end it)."""
    turns = _fair_turns()
    own = _own_connection()
    if turns is None or not getattr(_held, "value", False) or (own is not None and own.in_atomic_block):
        yield
        return
    _turn_connection_give_back()
    turns.release()
    _held.value = False
    try:
        yield
    finally:
        turns.acquire(_held.key)
        _held.value = True
        _turn_connection_take()
